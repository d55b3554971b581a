//! Token validation end to end: every way a token can be wrong is UNAUTHENTICATED, the message
//! says which check failed and never echoes the token, and nothing reaches STS. Asymmetric keys
//! come from a JWKS file or URL, with rotation by `kid`.

use std::time::Duration;

use e2e::broker::BrokerBuilder;
use e2e::http_doc::HttpDoc;
use e2e::leaks::{Secret, assert_no_secrets};
use e2e::moto::Moto;
use e2e::rpc::{bind, exchange, expect_code, get_credentials};
use e2e::stack::{AUDIENCE, BrokerStack, ISSUER, demo_roles_glob, new_session_id};
use e2e::sts_proxy::StsProxy;
use e2e::tokens::{
    Claims, SigningKey, TokenMinter, hs256_with_header, jwks, random_string, unsigned_token,
};
use jsonwebtoken::Algorithm;
use serde_json::json;
use tonic::Code;

#[tokio::test]
async fn invalid_tokens_are_unauthenticated_and_never_echoed() {
    let stack = BrokerStack::start().await;
    let seed = stack.seed().clone();
    let rw = seed.roles.read_write.clone();
    let good = || Claims::new("alice").role_arn(&rw);
    let other_secret = TokenMinter::hs256(&random_string(48))
        .issuer(ISSUER)
        .audience(AUDIENCE);
    let valid = stack.token(&good());
    let (head_payload, _) = valid.rsplit_once('.').unwrap();
    let (head, _) = head_payload.split_once('.').unwrap();
    let mallory_payload = {
        use base64::Engine;
        let claims = json!({"sub": "mallory", "role_arn": rw, "iss": ISSUER, "aud": AUDIENCE, "exp": e2e::tokens::now() + 3600});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
    };
    let signature = valid.rsplit_once('.').unwrap().1;

    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("not a JWT", "this-is-not-a-jwt".to_string()),
        ("three garbage parts", "aaaa.bbbb.cccc".to_string()),
        (
            "expired an hour ago",
            stack.token(&good().expires_in(-3600)),
        ),
        (
            "not valid for 10 more minutes (nbf)",
            stack.token(&good().not_before_in(600)),
        ),
        ("signed with another secret", other_secret.mint(&good())),
        (
            "payload swapped, signature kept",
            format!("{head}.{mallory_payload}.{signature}"),
        ),
        (
            "alg none",
            unsigned_token(&good().iss(ISSUER).aud(AUDIENCE)),
        ),
        (
            "HS384: not an allowed algorithm",
            stack
                .minter
                .clone()
                .algorithm(Algorithm::HS384)
                .mint(&good()),
        ),
        ("no exp", stack.token(&good().without("exp"))),
        ("no sub", stack.token(&good().without("sub"))),
        (
            "wrong issuer",
            stack.token(&good().iss("https://evil.example/")),
        ),
        ("wrong audience", stack.token(&good().aud("someone-else"))),
    ];

    let mut c = stack.broker.client().await;
    let mut secrets: Vec<Secret> = Vec::new();
    for (what, token) in &cases {
        let status = expect_code(
            exchange(&mut c, token, "").await,
            Code::Unauthenticated,
            &format!("ExchangeToken, {what}"),
        );
        assert!(
            !status.message().is_empty(),
            "{what}: the message says which check failed"
        );
        let status2 = expect_code(
            get_credentials(&mut c, &new_session_id(), token, "").await,
            Code::Unauthenticated,
            &format!("GetCredentials, {what}"),
        );
        expect_code(
            bind(&mut c, &new_session_id(), token, "").await,
            Code::Unauthenticated,
            &format!("BindSession, {what}"),
        );
        if token.len() > 8 {
            let secret = Secret::new(*what, token.clone());
            assert_no_secrets(
                &format!("{what}: status message"),
                status.message(),
                std::slice::from_ref(&secret),
            );
            assert_no_secrets(
                &format!("{what}: status message"),
                status2.message(),
                std::slice::from_ref(&secret),
            );
            secrets.push(secret);
        }
    }
    assert_eq!(stack.proxy.count(), 0, "no invalid token reaches STS");
    assert_no_secrets("broker log", &stack.broker.log_text(), &secrets);

    // The leeway (60 s by default) is for nbf only: a token 10 s past its exp gets nothing,
    // neither from ExchangeToken nor by binding or rebinding a session (issue 14: one exp rule).
    let late = stack.token(&good().expires_in(-10));
    let status = expect_code(
        exchange(&mut c, &late, "").await,
        Code::Unauthenticated,
        "ExchangeToken with exp 10 s ago",
    );
    assert!(status.message().contains("\"exp\""), "{}", status.message());
    let session_id = new_session_id();
    expect_code(
        get_credentials(&mut c, &session_id, &late, "").await,
        Code::Unauthenticated,
        "bind with exp 10 s ago",
    );
    get_credentials(&mut c, &session_id, &stack.token(&good()), "")
        .await
        .expect("bind with a current token");
    expect_code(
        get_credentials(&mut c, &session_id, &late, "").await,
        Code::Unauthenticated,
        "rebind with exp 10 s ago",
    );
    exchange(&mut c, &stack.token(&good().not_before_in(10)), "")
        .await
        .expect("nbf 10 s ahead is within the leeway");
}

/// moto + proxy + a broker that trusts `jwks_source` for RS256 and ES256, and no HS256 secret.
async fn jwks_stack(moto: &Moto, proxy: &StsProxy, source: (&str, &str)) -> e2e::broker::Broker {
    let seed = moto.seed();
    BrokerBuilder::new()
        .env(source.0, source.1)
        .env("BROKER_JWT_ALGORITHMS", "RS256,ES256")
        .env("BROKER_JWT_ISSUER", ISSUER)
        .env("BROKER_JWT_AUDIENCE", AUDIENCE)
        .env("BROKER_JWKS_REFETCH_INTERVAL", "1s")
        .allowed_roles(&[&demo_roles_glob()])
        .sts_endpoint(&proxy.endpoint())
        .aws_identity(
            &seed.users.broker.access_key_id,
            &seed.users.broker.secret_access_key,
        )
        .start()
        .await
}

#[tokio::test]
async fn rs256_and_es256_from_a_jwks_file_with_rotation_and_no_key_confusion() {
    let moto = Moto::start().await;
    let proxy = StsProxy::start(moto.port());
    let rw = moto.seed().roles.read_write.clone();
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let scratch = tempfile::tempdir().unwrap();
    let jwks_path = scratch.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&rsa, &ec]).to_string()).unwrap();
    let broker = jwks_stack(
        &moto,
        &proxy,
        ("BROKER_JWKS_FILE", jwks_path.to_str().unwrap()),
    )
    .await;
    let mut c = broker.client().await;
    let claims = || Claims::new("alice").role_arn(&rw);
    let minter = |key: &SigningKey| TokenMinter::with_key(key).issuer(ISSUER).audience(AUDIENCE);

    exchange(&mut c, &minter(&rsa).mint(&claims()), "")
        .await
        .expect("RS256 token");
    exchange(&mut c, &minter(&ec).mint(&claims()), "")
        .await
        .expect("ES256 token");

    // HS256 is not configured: refused, even signed with the RSA public key (key confusion).
    let public_jwk = rsa.jwk().to_string();
    let confused = hs256_with_header(
        &json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}),
        &claims().iss(ISSUER).aud(AUDIENCE),
        public_jwk.as_bytes(),
    );
    expect_code(
        exchange(&mut c, &confused, "").await,
        Code::Unauthenticated,
        "HS256 token naming the RSA kid",
    );
    // A stranger's key under a known kid.
    let impostor = SigningKey::rsa("rsa-1");
    expect_code(
        exchange(&mut c, &minter(&impostor).mint(&claims()), "").await,
        Code::Unauthenticated,
        "impostor key",
    );
    // An unknown kid, not (yet) in the file.
    let next = SigningKey::rsa("rsa-2");
    let next_token = minter(&next).mint(&claims());
    expect_code(
        exchange(&mut c, &next_token, "").await,
        Code::Unauthenticated,
        "unknown kid",
    );

    // Rotation: publish rsa-2; the unknown kid triggers a (rate-limited) refetch, no restart.
    std::fs::write(&jwks_path, jwks(&[&rsa, &ec, &next]).to_string()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match exchange(&mut c, &next_token, "").await {
            Ok(_) => break,
            Err(status)
                if status.code() == Code::Unauthenticated
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(status) => panic!(
                "rotated key never accepted: {:?} {}",
                status.code(),
                status.message()
            ),
        }
    }
    exchange(&mut c, &minter(&rsa).mint(&claims()), "")
        .await
        .expect("old key still valid");
}

#[tokio::test]
async fn jwks_url_is_fetched_and_refetched_for_an_unknown_kid_at_a_limited_rate() {
    let moto = Moto::start().await;
    let proxy = StsProxy::start(moto.port());
    let rw = moto.seed().roles.read_write.clone();
    let first = SigningKey::ec("ec-1");
    let doc = HttpDoc::start(&jwks(&[&first]).to_string());
    let broker = jwks_stack(&moto, &proxy, ("BROKER_JWKS_URL", &doc.url())).await;
    let mut c = broker.client().await;
    let claims = || Claims::new("alice").role_arn(&rw);
    let minter = |key: &SigningKey| TokenMinter::with_key(key).issuer(ISSUER).audience(AUDIENCE);

    exchange(&mut c, &minter(&first).mint(&claims()), "")
        .await
        .expect("ES256 token, key from URL");
    let fetched = doc.fetches();
    assert!(fetched >= 1, "the JWKS URL was fetched");

    // A burst of unknown kids must not turn into a burst of fetches.
    let stranger = SigningKey::ec("ec-unknown");
    for _ in 0..20 {
        expect_code(
            exchange(&mut c, &minter(&stranger).mint(&claims()), "").await,
            Code::Unauthenticated,
            "unknown kid",
        );
    }
    assert!(
        doc.fetches() - fetched <= 3,
        "20 unknown-kid tokens caused {} JWKS fetches: refetch is not rate-limited",
        doc.fetches() - fetched
    );

    // Rotation through the URL.
    let second = SigningKey::rsa("rsa-2");
    doc.set_body(&jwks(&[&first, &second]).to_string());
    let token = minter(&second).mint(&claims());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Err(status) = exchange(&mut c, &token, "").await {
        assert!(
            status.code() == Code::Unauthenticated && tokio::time::Instant::now() < deadline,
            "rotated key never accepted: {:?} {}",
            status.code(),
            status.message()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn oidc_discovery_finds_the_keys_and_its_issuer_becomes_the_required_iss() {
    let moto = Moto::start().await;
    let proxy = StsProxy::start(moto.port());
    let rw = moto.seed().roles.read_write.clone();
    let key = SigningKey::ec("ec-1");
    let doc = HttpDoc::start("{}");
    let issuer = format!("{}/tenant", doc.base());
    doc.set_path(
        "/tenant/.well-known/openid-configuration",
        &json!({"issuer": issuer, "jwks_uri": format!("{}/tenant/keys", doc.base())}).to_string(),
    );
    doc.set_path("/tenant/keys", &jwks(&[&key]).to_string());
    let seed = moto.seed();
    let broker = BrokerBuilder::new()
        .env("BROKER_OIDC_ISSUER_URL", &issuer)
        .env("BROKER_JWT_AUDIENCE", AUDIENCE)
        .env("BROKER_JWT_ALGORITHMS", "ES256")
        .allowed_roles(&[&demo_roles_glob()])
        .sts_endpoint(&proxy.endpoint())
        .aws_identity(
            &seed.users.broker.access_key_id,
            &seed.users.broker.secret_access_key,
        )
        .start()
        .await;
    let mut c = broker.client().await;
    let claims = || Claims::new("alice").role_arn(&rw);
    exchange(
        &mut c,
        &TokenMinter::with_key(&key)
            .issuer(&issuer)
            .audience(AUDIENCE)
            .mint(&claims()),
        "",
    )
    .await
    .expect("a token of the discovered issuer, signed with a discovered key");
    // The same key, another issuer: the OIDC issuer is the required iss.
    expect_code(
        exchange(
            &mut c,
            &TokenMinter::with_key(&key)
                .issuer(ISSUER)
                .audience(AUDIENCE)
                .mint(&claims()),
            "",
        )
        .await,
        Code::Unauthenticated,
        "another issuer",
    );
}
