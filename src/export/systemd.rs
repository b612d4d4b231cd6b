//! sd_notify: readiness and watchdog for `Type=notify` services.
//!
//! A datagram to `$NOTIFY_SOCKET`; a no-op outside systemd. The protocol is
//! stable and tiny, so no library is needed.

use std::os::unix::net::UnixDatagram;

/// Sends one notification (e.g. `READY=1`, `WATCHDOG=1`, `STATUS=…`).
/// Returns false when not running under systemd or the send failed.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return false };
    let Ok(sock) = UnixDatagram::unbound() else { return false };
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // Abstract socket namespace (Linux).
        use std::os::linux::net::SocketAddrExt;
        match std::os::unix::net::SocketAddr::from_abstract_name(name) {
            Ok(addr) => sock.send_to_addr(state.as_bytes(), &addr).is_ok(),
            Err(_) => false,
        }
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifies_a_listening_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        // SAFETY of the environment: tests in this module run alone on this variable.
        unsafe_env_set(&path);
        assert!(notify("READY=1"));
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[allow(unsafe_code)]
    fn unsafe_env_set(p: &std::path::Path) {
        // set_var is unsafe in edition 2024 because other threads may read the
        // environment; no other test reads NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", p) };
    }
}
