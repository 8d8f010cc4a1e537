//! systemd's readiness protocol (`sd_notify(3)`), for `Type=notify`
//! units: `READY=1` once the program is attached and the workers run,
//! `RELOADING=1` around a rules reload, `STOPPING=1` when stopping. Without
//! `$NOTIFY_SOCKET` (not started by systemd) nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the service
/// manager, if there is one. Failures are logged, never fatal: the data
/// plane works the same without a manager listening.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        notify_to(&path, state);
    }
}

/// [`notify`] to the socket `path` (`$NOTIFY_SOCKET`'s form).
pub fn notify_to(path: &std::ffi::OsStr, state: &str) {
    let sent = (|| -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        // `@name`: Linux's abstract namespace
        let address = match bytes.strip_prefix(b"@") {
            Some(name) => {
                <SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name)?
            }
            None => SocketAddr::from_pathname(std::path::Path::new(path))?,
        };
        socket.send_to_addr(state.as_bytes(), &address)?;
        Ok(())
    })();
    if let Err(error) = sent {
        tracing::warn!(%error, socket = ?path, "cannot notify the service manager");
    }
}

/// `RELOADING=1` with the monotonic time systemd asks for it.
pub fn reloading() {
    let now_us = xdp_redirect::clock::monotonic_ns() / 1000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={now_us}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_reaches_the_socket_named_by_notify_socket() {
        let dir = std::env::temp_dir().join(format!("dp-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
