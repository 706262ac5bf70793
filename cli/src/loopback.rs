// SPDX-License-Identifier: MPL-2.0
//! Loopback ports for the commands that start local services (`demo`, `bench-control`).
//! Tests have their own panicking twins in `gopswarm-test-support`, whose crate root must not
//! depend on this library (the plugin's tests use it without building the CLI).

use anyhow::{Result, bail};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Wait until something accepts connections on 127.0.0.1:`port`; an error after `timeout`.
pub fn wait_listen(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("nothing listens on port {port} after {timeout:?}")
}
