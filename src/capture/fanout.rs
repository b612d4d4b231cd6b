//! Several capture threads on one interface: AF_PACKET fanout.
//!
//! libpcap has no API for it (upstream pull requests #674 and #869 were not
//! merged), so, as FastNetMon does, each activated libpcap handle's own
//! socket joins one `PACKET_FANOUT_HASH` group with `setsockopt`. The kernel
//! then hands each packet to one member by its flow hash, which it makes
//! symmetric (both directions of a connection reach the same member);
//! fragments hash on addresses alone, like netvigil's own flow keys.

use pcap::{Active, Capture};

use super::CaptureError;

/// A fanout group id for this process (ids are per network namespace; the
/// pid keeps two sensors on one host apart).
pub fn group_id() -> u16 {
    (std::process::id() & 0xffff) as u16
}

/// Joins `cap`'s socket to fanout group `group` (hash mode).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn join(cap: &Capture<Active>, group: u16, interface: &str) -> Result<(), CaptureError> {
    use std::os::fd::AsRawFd;
    let mode = libc::PACKET_FANOUT_HASH as libc::c_int;
    let val: libc::c_int = libc::c_int::from(group) | (mode << 16);
    // SAFETY: the fd is libpcap's open packet socket, owned by `cap` for the
    // duration of the call; `val` outlives the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            cap.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(CaptureError::Live {
            name: interface.to_string(),
            message: format!(
                "cannot join AF_PACKET fanout group {group}: {}",
                std::io::Error::last_os_error()
            ),
        })
    }
}

/// Fanout is Linux-only.
#[cfg(not(target_os = "linux"))]
pub fn join(_cap: &Capture<Active>, _group: u16, interface: &str) -> Result<(), CaptureError> {
    Err(CaptureError::Live {
        name: interface.to_string(),
        message: "several capture threads need Linux AF_PACKET fanout".into(),
    })
}
