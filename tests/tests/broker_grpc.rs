//! The broker's session and credential API against real processes: moto enforcing IAM, the real
//! `credential-broker` binary, a counting STS proxy. Written from issue 2's specification.

use e2e::aws;
use e2e::moto::ACCOUNT_ID;
use e2e::rpc::{
    self, bind, describe_by_handle, describe_by_id, exchange, expect_code, get_credentials, seconds,
};
use e2e::stack::{BrokerStack, ISSUER, new_session_id};
use e2e::tokens::{Claims, now};
use tonic::Code;

#[tokio::test]
async fn bound_read_write_session_gets_credentials_that_write_as_the_assumed_role() {
    let stack = BrokerStack::start().await;
    let seed = stack.seed().clone();
    let mut c = stack.broker.client().await;
    let session_id = new_session_id();
    let claims = Claims::new("alice").role_arn(&seed.roles.read_write);
    let token = stack.token(&claims);

    let info = bind(&mut c, &session_id, &token, "")
        .await
        .expect("BindSession");
    assert_eq!(info.subject, "alice");
    assert_eq!(info.issuer, ISSUER);
    assert_eq!(info.role_arn, seed.roles.read_write);
    assert_eq!(info.source_identity, "alice");
    assert_eq!(seconds(&info.token_expires_at), claims.exp().unwrap());
    assert!(
        !info.session_handle.is_empty(),
        "a session handle names the session"
    );
    assert!(
        !info.session_handle.contains(&session_id),
        "the handle is not the raw id"
    );
    assert!(!info.role_session_name.is_empty());
    assert_eq!(
        info.assumed_role_arn,
        format!(
            "arn:aws:sts::{ACCOUNT_ID}:assumed-role/demo-read-write/{}",
            info.role_session_name
        )
    );
    assert!(
        seconds(&info.credentials_expire_at) > now(),
        "BindSession made sure credentials exist"
    );

    let response = get_credentials(&mut c, &session_id, &token, "")
        .await
        .expect("GetCredentials");
    assert!(
        !response.rebound,
        "the binding token again: nothing was (re)bound"
    );
    let session = response.session.expect("session");
    assert_eq!(session.session_handle, info.session_handle);
    let creds = response.credentials.expect("credentials");
    assert!(
        !creds.access_key_id.is_empty()
            && !creds.secret_access_key.is_empty()
            && !creds.session_token.is_empty()
    );
    assert!(
        seconds(&creds.expiration) > now() + 600,
        "credentials live at least 15 minutes"
    );

    // The credentials really are the role's: they write to its bucket, and STS names them.
    let endpoint = stack.aws_endpoint();
    let s3 = aws::s3(&endpoint, &creds);
    aws::put_object(
        &s3,
        &seed.buckets.demo,
        "from-alice.txt",
        b"written through the broker",
    )
    .await
    .expect("PutObject with read-write credentials");
    assert_eq!(
        aws::get_object(&s3, &seed.buckets.demo, "from-alice.txt")
            .await
            .unwrap(),
        b"written through the broker"
    );
    assert_eq!(
        aws::put_object(&s3, &seed.buckets.other, "x.txt", b"x")
            .await
            .err()
            .as_deref(),
        Some("AccessDenied"),
        "the role's rights end at its bucket"
    );
    assert_eq!(
        aws::caller_arn(&endpoint, &creds).await,
        info.assumed_role_arn
    );
    assert_eq!(stack.proxy.assume_role_count(), 1);
}

#[tokio::test]
async fn read_only_token_gets_credentials_that_cannot_write() {
    let stack = BrokerStack::start().await;
    let seed = stack.seed().clone();
    let mut c = stack.broker.client().await;
    let session_id = new_session_id();

    // The first GetCredentials with a token binds the session (the adapter's one call per tool).
    let bob = stack.ro_token("bob");
    let response = get_credentials(&mut c, &session_id, &bob, "")
        .await
        .expect("GetCredentials binds an unbound session");
    assert!(response.rebound, "this call bound the session");
    let session = response.session.expect("session");
    assert_eq!(session.role_arn, seed.roles.read_only);
    let creds = response.credentials.expect("credentials");

    let endpoint = stack.aws_endpoint();
    let s3 = aws::s3(&endpoint, &creds);
    let keys = aws::list_keys(&s3, &seed.buckets.demo)
        .await
        .expect("read-only lists");
    assert!(keys.contains(&"README.txt".to_string()));
    assert_eq!(
        aws::put_object(&s3, &seed.buckets.demo, "denied.txt", b"no")
            .await
            .err()
            .as_deref(),
        Some("AccessDenied")
    );
    let arn = aws::caller_arn(&endpoint, &creds).await;
    assert!(
        arn.starts_with(&format!(
            "arn:aws:sts::{ACCOUNT_ID}:assumed-role/demo-read-only/"
        )),
        "{arn}"
    );

    // Later calls carry the same token (the fast path: no validation again, no new binding).
    let again = get_credentials(&mut c, &session_id, &bob, "")
        .await
        .expect("bound session, same token");
    assert!(!again.rebound);
    assert_eq!(
        again.credentials.unwrap().access_key_id,
        creds.access_key_id
    );
}

#[tokio::test]
async fn unknown_and_revoked_sessions_are_not_found_for_good() {
    let stack = BrokerStack::start().await;
    let mut c = stack.broker.client().await;
    let mut ops = stack.admin().await;

    // An unknown session without a token: what is missing is the token that would bind it
    // (UNAUTHENTICATED, so the adapter answers 401 "send your token"), not a new session.
    let unknown = new_session_id();
    expect_code(
        get_credentials(&mut c, &unknown, "", "").await,
        Code::Unauthenticated,
        "GetCredentials, unknown session, no token",
    );
    expect_code(
        describe_by_id(&mut ops, &unknown).await,
        Code::NotFound,
        "DescribeSession, unknown session",
    );

    let session_id = new_session_id();
    let alice = stack.rw_token("alice");
    let info = bind(&mut c, &session_id, &alice, "").await.expect("bind");
    let revoked = rpc::revoke_by_handle(&mut ops, &info.session_handle)
        .await
        .expect("RevokeSession");
    assert!(revoked.revoked);
    assert_eq!(revoked.session_handle, info.session_handle);

    expect_code(
        get_credentials(&mut c, &session_id, &alice, "").await,
        Code::NotFound,
        "GetCredentials, revoked, with the token that bound it",
    );
    expect_code(
        get_credentials(&mut c, &session_id, &stack.rw_token("alice"), "").await,
        Code::NotFound,
        "GetCredentials with a fresh valid token must not revive a revoked session",
    );
    expect_code(
        bind(&mut c, &session_id, &stack.rw_token("alice"), "").await,
        Code::NotFound,
        "BindSession must not revive a revoked session",
    );
    expect_code(
        describe_by_id(&mut ops, &session_id).await,
        Code::NotFound,
        "DescribeSession, revoked",
    );
    expect_code(
        describe_by_handle(&mut ops, &info.session_handle).await,
        Code::NotFound,
        "DescribeSession by handle, revoked",
    );
    let again = rpc::revoke_by_id(&mut ops, &session_id)
        .await
        .expect("RevokeSession twice");
    assert!(!again.revoked, "already revoked");

    // A new session for the same user works.
    bind(&mut c, &new_session_id(), &stack.rw_token("alice"), "")
        .await
        .expect("a new session");
}

#[tokio::test]
async fn another_subjects_token_is_denied_and_leaves_the_session_unchanged() {
    let stack = BrokerStack::start().await;
    let mut c = stack.broker.client().await;
    let mut ops = stack.admin().await;
    let session_id = new_session_id();
    let alice = stack.rw_token("alice");
    bind(&mut c, &session_id, &alice, "")
        .await
        .expect("bind alice");
    let before = get_credentials(&mut c, &session_id, &alice, "")
        .await
        .expect("alice's credentials");
    let before_session = before.session.clone().unwrap();

    let status = expect_code(
        get_credentials(&mut c, &session_id, &stack.rw_token("mallory"), "").await,
        Code::PermissionDenied,
        "GetCredentials with another subject's token",
    );
    assert!(!status.message().is_empty(), "the refusal says why");
    expect_code(
        bind(&mut c, &session_id, &stack.rw_token("mallory"), "").await,
        Code::PermissionDenied,
        "BindSession with another subject's token",
    );

    let after = describe_by_id(&mut ops, &session_id)
        .await
        .expect("describe");
    assert_eq!(after.subject, "alice");
    assert_eq!(after.rebind_count, before_session.rebind_count);
    assert_eq!(after.token_expires_at, before_session.token_expires_at);
    assert_eq!(
        after.updated_at, before_session.updated_at,
        "a refused token changes nothing"
    );
    let still = get_credentials(&mut c, &session_id, &alice, "")
        .await
        .expect("alice's session still works");
    assert_eq!(
        still.credentials.unwrap().access_key_id,
        before.credentials.unwrap().access_key_id
    );
    assert_eq!(still.session.unwrap().subject, "alice");
}

/// Issue 12, the broker's half of the attack: a leaked session id plus network reach to the broker
/// used to be an AWS credential (a token-less GetCredentials on a bound session served the full
/// credentials until the bound token expired). Every call that touches a session needs a token.
#[tokio::test]
async fn a_bound_session_id_without_a_token_gets_unauthenticated_and_no_credential() {
    let stack = BrokerStack::start().await;
    let mut c = stack.broker.client().await;
    let session_id = new_session_id();
    let alice = stack.rw_token("alice");
    bind(&mut c, &session_id, &alice, "")
        .await
        .expect("alice binds her session");
    let before = stack.proxy.assume_role_count();

    // The attacker holds the session id and reaches the broker; the binding token is live.
    let status = expect_code(
        get_credentials(&mut c, &session_id, "", "").await,
        Code::Unauthenticated,
        "GetCredentials on a bound session without a token",
    );
    assert!(
        status.message().contains("token"),
        "the refusal names the missing token: {}",
        status.message()
    );
    assert!(
        !status.message().contains(&session_id),
        "no raw session id in the answer"
    );
    expect_code(
        get_credentials(&mut c, &session_id, "", &stack.seed().roles.read_write).await,
        Code::Unauthenticated,
        "GetCredentials on a bound session without a token, naming the bound role",
    );
    let status = expect_code(
        bind(&mut c, &session_id, "", "").await,
        Code::Unauthenticated,
        "BindSession on a bound session without a token",
    );
    assert!(status.message().contains("token"), "{}", status.message());
    assert_eq!(
        stack.proxy.assume_role_count(),
        before,
        "token-less calls issue nothing"
    );

    // Alice herself is served as before, on the fast path.
    let served = get_credentials(&mut c, &session_id, &alice, "")
        .await
        .expect("alice's own call with her token");
    assert!(!served.rebound);
    assert!(
        !served
            .credentials
            .expect("credentials")
            .secret_access_key
            .is_empty()
    );
}

#[tokio::test]
async fn a_new_token_of_the_same_subject_rebinds_the_session() {
    let stack = BrokerStack::start().await;
    let seed = stack.seed().clone();
    let mut c = stack.broker.client().await;
    let session_id = new_session_id();
    let first = stack.rw_token("alice");
    let info = bind(&mut c, &session_id, &first, "").await.expect("bind");
    assert_eq!(info.rebind_count, 0);

    let second_claims = Claims::new("alice")
        .role_arn(&seed.roles.read_write)
        .expires_in(7200);
    let second = stack.token(&second_claims);
    let response = get_credentials(&mut c, &session_id, &second, "")
        .await
        .expect("new token, same subject");
    assert!(
        response.rebound,
        "a new token of the same subject re-authenticates the session"
    );
    let session = response.session.unwrap();
    assert_eq!(session.session_handle, info.session_handle);
    assert_eq!(session.subject, "alice");
    assert_eq!(session.rebind_count, 1);
    assert_eq!(
        seconds(&session.token_expires_at),
        second_claims.exp().unwrap()
    );

    let same = get_credentials(&mut c, &session_id, &second, "")
        .await
        .expect("same token again");
    assert!(!same.rebound, "the bound token again is not a rebind");
    assert_eq!(same.session.unwrap().rebind_count, 1);
    // Same issuer, subject and role: the same cached credential, one STS call in all.
    assert_eq!(stack.proxy.assume_role_count(), 1);
}

#[tokio::test]
async fn exchange_token_needs_no_session_and_creates_none() {
    let stack = BrokerStack::start().await;
    let seed = stack.seed().clone();
    let mut c = stack.broker.client().await;
    let mut ops = stack.admin().await;
    let claims = Claims::new("svc-reporting").role_arn(&seed.roles.read_write);
    let response = exchange(&mut c, &stack.token(&claims), "")
        .await
        .expect("ExchangeToken");
    let principal = response.principal.expect("principal");
    assert_eq!(principal.subject, "svc-reporting");
    assert_eq!(principal.issuer, ISSUER);
    assert_eq!(principal.role_arn, seed.roles.read_write);
    assert_eq!(principal.source_identity, "svc-reporting");
    assert_eq!(seconds(&principal.token_expires_at), claims.exp().unwrap());
    let creds = response.credentials.expect("credentials");
    let endpoint = stack.aws_endpoint();
    assert_eq!(
        aws::caller_arn(&endpoint, &creds).await,
        principal.assumed_role_arn
    );
    aws::put_object(
        &aws::s3(&endpoint, &creds),
        &seed.buckets.demo,
        "svc.txt",
        b"ok",
    )
    .await
    .expect("exchanged read-write credentials write");
    assert!(
        rpc::list_all(&mut ops, 100, "").await.is_empty(),
        "ExchangeToken is stateless: no session appears"
    );
}

#[tokio::test]
async fn roles_outside_the_token_or_the_allowlist_are_denied_before_sts() {
    let stack = BrokerStack::start().await;
    let seed = stack.seed().clone();
    let mut c = stack.broker.client().await;

    let outside = [
        (
            "a role the allowlist does not name",
            seed.roles.ops_admin.clone(),
        ),
        (
            "a path below an allowed name: `*` must not cross `/`",
            format!("arn:aws:iam::{ACCOUNT_ID}:role/demo-x/escalated"),
        ),
        (
            "the same name in another account",
            "arn:aws:iam::999999999999:role/demo-read-write".to_string(),
        ),
    ];
    for (what, role) in &outside {
        let token = stack.token(&Claims::new("alice").role_arn(role));
        expect_code(
            exchange(&mut c, &token, "").await,
            Code::PermissionDenied,
            &format!("ExchangeToken, {what}"),
        );
        expect_code(
            bind(&mut c, &new_session_id(), &token, "").await,
            Code::PermissionDenied,
            &format!("BindSession, {what}"),
        );
        expect_code(
            get_credentials(&mut c, &new_session_id(), &token, "").await,
            Code::PermissionDenied,
            &format!("GetCredentials, {what}"),
        );
    }

    // An explicit role in the request must be one the token grants.
    let rw_only = stack.rw_token("alice");
    expect_code(
        exchange(&mut c, &rw_only, &seed.roles.read_only).await,
        Code::PermissionDenied,
        "ExchangeToken asking for a role the token does not grant",
    );
    expect_code(
        bind(&mut c, &new_session_id(), &rw_only, &seed.roles.read_only).await,
        Code::PermissionDenied,
        "BindSession asking for a role the token does not grant",
    );
    assert_eq!(stack.proxy.count(), 0, "refused before any STS call");

    // `roles` may hold names (mapped into BROKER_ROLE_ACCOUNT_ID) and ARNs; the first is the default.
    let multi =
        stack.token(&Claims::new("alice").roles(&["demo-read-only", &seed.roles.read_write]));
    let default = exchange(&mut c, &multi, "")
        .await
        .expect("first role by default");
    assert_eq!(default.principal.unwrap().role_arn, seed.roles.read_only);
    let chosen = exchange(&mut c, &multi, &seed.roles.read_write)
        .await
        .expect("a granted role on request");
    assert_eq!(chosen.principal.unwrap().role_arn, seed.roles.read_write);
}
