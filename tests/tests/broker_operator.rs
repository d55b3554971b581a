//! What operators see: DescribeSession, ListSessions and RevokeSession name sessions by a keyed
//! handle and never return a secret; and after a full run the broker's log holds no token,
//! secret key, session token or raw session id.

use std::collections::HashSet;

use e2e::leaks::{Secret, assert_no_secrets};
use e2e::rpc::{
    self, bind, describe_by_handle, describe_by_id, exchange, expect_code, get_credentials,
    list_all,
};
use e2e::stack::{BrokerStack, new_session_id};
use tonic::Code;

#[tokio::test]
async fn operator_views_show_handles_and_no_secret_and_the_log_stays_clean() {
    // Most verbose logging of the broker's own code: a leak at debug level is still a leak.
    let stack =
        BrokerStack::start_with(|b| b.env("RUST_LOG", "info,credential_broker=trace")).await;
    let seed = stack.seed().clone();
    let mut c = stack.broker.client().await;
    let mut ops = stack.admin().await;
    let mut secrets = vec![
        Secret::new("HS256 secret", stack.secret.clone()),
        Secret::new("operator token", stack.operator_token()),
        Secret::new(
            "broker's AWS secret key",
            seed.users.broker.secret_access_key.clone(),
        ),
    ];

    // Three sessions: two of alice, one of bob.
    let mut handles = Vec::new();
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for (i, sub) in ["alice", "alice", "bob"].iter().enumerate() {
        let session_id = new_session_id();
        let token = stack.rw_token(sub);
        let info = bind(&mut c, &session_id, &token, "").await.expect("bind");
        let creds = get_credentials(&mut c, &session_id, &token, "")
            .await
            .expect("get")
            .credentials
            .unwrap();
        secrets.extend(Secret::of_session(i, &session_id, &token, &creds));
        tokens.push(token);
        handles.push(info.session_handle);
        ids.push(session_id);
    }
    // A rebind, a refused subject, an exchange and an invalid token, so their log lines exist too.
    let rebind_token = stack.rw_token("alice");
    get_credentials(&mut c, &ids[0], &rebind_token, "")
        .await
        .expect("rebind");
    secrets.push(Secret::new("rebind token", rebind_token));
    let mallory = stack.rw_token("mallory");
    expect_code(
        get_credentials(&mut c, &ids[0], &mallory, "").await,
        Code::PermissionDenied,
        "other subject",
    );
    secrets.push(Secret::new("mallory's token", mallory));
    let exchanged = exchange(&mut c, &stack.ro_token("svc"), "")
        .await
        .expect("exchange");
    let exchanged_creds = exchanged.credentials.unwrap();
    secrets.push(Secret::new(
        "exchange secret key",
        exchanged_creds.secret_access_key,
    ));
    secrets.push(Secret::new(
        "exchange session token",
        exchanged_creds.session_token,
    ));
    let expired = stack.token(
        &e2e::tokens::Claims::new("alice")
            .role_arn(&seed.roles.read_write)
            .expires_in(-3600),
    );
    expect_code(
        exchange(&mut c, &expired, "").await,
        Code::Unauthenticated,
        "expired",
    );
    secrets.push(Secret::new("expired token", expired));

    // Handles are stable per id, distinct per session, and name the session both ways.
    assert_eq!(handles.iter().collect::<HashSet<_>>().len(), 3);
    for (id, handle) in ids.iter().zip(&handles) {
        let by_id = describe_by_id(&mut ops, id).await.expect("describe by id");
        let by_handle = describe_by_handle(&mut ops, handle)
            .await
            .expect("describe by handle");
        assert_eq!(&by_id.session_handle, handle);
        assert_eq!(by_id, by_handle);
    }

    // Listing: all, by subject, and page by page.
    let all = list_all(&mut ops, 0, "").await;
    let listed: HashSet<String> = all.iter().map(|s| s.session_handle.clone()).collect();
    assert_eq!(
        listed,
        handles.iter().cloned().collect(),
        "exactly the three sessions are listed"
    );
    let alice: HashSet<String> = list_all(&mut ops, 100, "alice")
        .await
        .into_iter()
        .map(|s| s.session_handle)
        .collect();
    assert_eq!(alice, handles[..2].iter().cloned().collect());
    let paged = list_all(&mut ops, 1, "").await;
    assert_eq!(
        paged.len(),
        3,
        "page size 1 still reaches every session once"
    );
    assert_eq!(
        paged
            .iter()
            .map(|s| &s.session_handle)
            .collect::<HashSet<_>>()
            .len(),
        3
    );

    // No operator answer carries a secret.
    let answers = format!(
        "{all:?}\n{paged:?}\n{:?}",
        describe_by_id(&mut ops, &ids[0]).await.unwrap()
    );
    assert_no_secrets("operator answers", &answers, &secrets);

    // Revoking one session leaves the others listed.
    let revoked = rpc::revoke_by_id(&mut ops, &ids[2])
        .await
        .expect("revoke bob");
    assert_eq!(revoked.session_handle, handles[2]);
    let after: HashSet<String> = list_all(&mut ops, 100, "")
        .await
        .into_iter()
        .map(|s| s.session_handle)
        .collect();
    assert_eq!(
        after,
        handles[..2].iter().cloned().collect(),
        "a revoked session is no longer listed"
    );
    expect_code(
        get_credentials(&mut c, &ids[2], &tokens[2], "").await,
        Code::NotFound,
        "revoked",
    );
    get_credentials(&mut c, &ids[1], &tokens[1], "")
        .await
        .expect("others unaffected");

    let log = stack.broker.log_text();
    assert!(!log.trim().is_empty(), "the broker logged its events");
    assert!(
        handles.iter().any(|h| log.contains(h.as_str())),
        "logs name sessions by their handle"
    );
    assert_no_secrets("broker log", &log, &secrets);
}
