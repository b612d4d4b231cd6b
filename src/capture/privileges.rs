//! Dropping root after the capture is open (`live --user NAME`).
//!
//! Opening a device needs CAP_NET_RAW; reading from the open handle does
//! not. Everything the sensor opens later (state files) must then be
//! writable by that user.

use std::ffi::CString;

/// Errors dropping privileges; all fatal at start-up.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// No such user in the password database.
    #[error("--user {0}: no such user")]
    NoUser(String),
    /// A set*id call failed (not root?).
    #[error("--user {user}: cannot switch to uid {uid}: {source}; start as root to use --user")]
    Switch {
        /// The user asked for.
        user: String,
        /// Its uid.
        uid: u32,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Switches the whole process to `user`'s uid and gid, with no supplementary groups.
#[allow(unsafe_code)]
pub fn drop_to(user: &str) -> Result<(u32, u32), PrivilegeError> {
    let name = CString::new(user).map_err(|_| PrivilegeError::NoUser(user.to_string()))?;
    // SAFETY: getpwnam returns a pointer to static storage or null; the
    // fields are copied out before any other call that could overwrite it.
    let (uid, gid) = unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return Err(PrivilegeError::NoUser(user.to_string()));
        }
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    let fail =
        |uid| PrivilegeError::Switch { user: user.to_string(), uid, source: std::io::Error::last_os_error() };
    // SAFETY: plain system calls with valid arguments; order matters (groups
    // and gid while still root, uid last).
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
            return Err(fail(uid));
        }
        if libc::getuid() != uid || libc::geteuid() != uid {
            return Err(fail(uid));
        }
    }
    Ok((uid, gid))
}
