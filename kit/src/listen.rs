//! Reporting the address a server really bound.
//!
//! A server told to listen on port 0 gets a free port from the kernel at `bind`, so whoever
//! started it (the end-to-end harness, a local stack) cannot know the port beforehand. Instead of
//! probing for a free port and handing it over (a check-then-bind race: another process may take
//! it in between), the starter passes a file path (`BROKER_LISTEN_ADDR_FILE`,
//! `ADAPTER_LISTEN_ADDR_FILE`) and the server writes the bound `host:port` there once it listens.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

/// Writes `addr` (as `127.0.0.1:PORT` and a line break) to `path`, atomically: the text goes to a
/// sibling temporary file first and is renamed into place, so a reader polling for `path` never
/// sees a half-written address.
pub fn write_addr_file(path: &Path, addr: SocketAddr) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut file = std::fs::File::create(&tmp)?;
        writeln!(file, "{addr}")?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Reads an address written by [`write_addr_file`]; `None` while the file does not exist yet.
pub fn read_addr_file(path: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_written_is_read_back_and_a_missing_file_is_none() {
        let dir = std::env::temp_dir().join(format!("kit-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("addr");
        assert_eq!(read_addr_file(&path), None);
        let addr: SocketAddr = "127.0.0.1:43210".parse().unwrap();
        write_addr_file(&path, addr).unwrap();
        assert_eq!(read_addr_file(&path), Some(addr));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
