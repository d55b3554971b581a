//! Secret-bearing settings never show their values: `--help` of both binaries and of their
//! subcommands (clap prints `[env: NAME=value]` for every variable that is set unless told not
//! to), and the errors a bad secret setting causes at start. ECS injects private keys and secrets
//! as environment values, so whoever runs `--help` in a task — or reads its start-up log — must
//! not see them (issue 14).

use std::process::{Command, Output};

use e2e::tools::{adapter_bin, broker_bin};

/// Every secret-bearing variable of the broker (serve, mint-token, healthcheck).
const BROKER_SECRETS: &[&str] = &[
    "BROKER_JWT_HS256_SECRET",
    "BROKER_CACHE_URL",
    "BROKER_CACHE_KEY",
    "BROKER_CACHE_KEY_PREVIOUS",
    "BROKER_HANDLE_KEY",
    "BROKER_TLS_KEY",
    "BROKER_HEALTHCHECK_CLIENT_KEY",
];

/// Every secret-bearing variable of the adapter.
const ADAPTER_SECRETS: &[&str] = &["ADAPTER_BROKER_CLIENT_KEY"];

/// A value no help text or message would contain by chance, one per variable.
fn marker(var: &str) -> String {
    format!(
        "MARKER-{}-7f3a9c",
        var.to_ascii_lowercase().replace('_', "-")
    )
}

fn run(bin: &std::path::Path, args: &[&str], vars: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for var in vars {
        cmd.env(var, marker(var));
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().expect("binary runs")
}

fn assert_no_marker(what: &str, output: &Output, vars: &[&str]) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for var in vars {
        assert!(
            !text.contains(&marker(var)),
            "{what}: the value of {var} is printed:\n{text}"
        );
    }
}

#[test]
fn help_of_both_binaries_never_prints_a_secret_value() {
    let broker = broker_bin();
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["healthcheck", "--help"],
        &["mint-token", "--help"],
    ] {
        let out = run(&broker, args, BROKER_SECRETS, &[]);
        assert!(out.status.success(), "credential-broker {args:?}: {out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Usage"), "{help}");
        assert_no_marker(&format!("credential-broker {args:?}"), &out, BROKER_SECRETS);
    }
    // The help does print plain settings' values (so the test can see a marker at all).
    let out = run(&broker, &["--help"], &["BROKER_SESSION_GRACE"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&marker("BROKER_SESSION_GRACE")),
        "a non-secret value is shown"
    );

    let adapter = adapter_bin();
    for args in [&["--help"][..], &["healthcheck", "--help"]] {
        let out = run(&adapter, args, ADAPTER_SECRETS, &[]);
        assert!(out.status.success(), "mcp-adapter {args:?}: {out:?}");
        assert_no_marker(&format!("mcp-adapter {args:?}"), &out, ADAPTER_SECRETS);
    }
}

#[test]
fn a_key_given_as_text_that_is_not_a_readable_path_is_not_echoed_in_the_error() {
    // A PEM key pasted without its -----BEGIN line (or with leading blanks) is taken as a path;
    // the error says the file cannot be read but must not print the key material.
    let key = "MARKER-broker-tls-key-7f3a9c\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC";
    let out = run(
        &broker_bin(),
        &[],
        &[],
        &[
            (
                "BROKER_JWT_HS256_SECRET",
                "0123456789abcdef0123456789abcdef",
            ),
            ("BROKER_ALLOW_ANY_ROLE", "true"),
            ("BROKER_LISTEN", "127.0.0.1:0"),
            (
                "BROKER_TLS_CERT",
                "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
            ),
            ("BROKER_TLS_KEY", key),
        ],
    );
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("BROKER_TLS_KEY"), "{text}");
    assert!(!text.contains("MARKER"), "the key text is echoed:\n{text}");

    let out = run(
        &adapter_bin(),
        &[],
        &[],
        &[
            ("ADAPTER_LISTEN", "127.0.0.1:0"),
            ("ADAPTER_BROKER_URL", "https://127.0.0.1:9"),
            (
                "ADAPTER_BROKER_CLIENT_CERT",
                "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
            ),
            ("ADAPTER_BROKER_CLIENT_KEY", key),
        ],
    );
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ADAPTER_BROKER_CLIENT_KEY"), "{text}");
    assert!(!text.contains("MARKER"), "the key text is echoed:\n{text}");
}
