//! The operator's walkthrough with grpcurl 1.8 (reflection v1alpha only): list, describe, health,
//! BindSession on the credential plane and DescribeSession / ListSessions / RevokeSession on the
//! operator plane (`credbroker.v1.SessionAdmin`, with an operator's token), with no .proto file at
//! hand.

use e2e::grpcurl::Grpcurl;
use e2e::stack::{BrokerStack, new_session_id};
use serde_json::json;

#[tokio::test]
async fn grpcurl_lists_describes_checks_health_and_calls_the_broker() {
    let stack = BrokerStack::start().await;
    let grpcurl = Grpcurl::new(stack.broker.addr());

    let services = grpcurl.list(None).await;
    let services: Vec<&str> = services.expect_ok("list").lines().map(str::trim).collect();
    for expected in [
        "credbroker.v1.CredentialBroker",
        "credbroker.v1.SessionAdmin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(&expected),
            "{expected} not listed: {services:?}"
        );
    }
    assert!(
        services.iter().any(|s| s.starts_with("grpc.reflection.")),
        "reflection not listed: {services:?}"
    );

    let methods = grpcurl.list(Some("credbroker.v1.CredentialBroker")).await;
    let methods = methods.expect_ok("list service");
    for rpc in ["BindSession", "GetCredentials", "ExchangeToken"] {
        assert!(
            methods.contains(&format!("credbroker.v1.CredentialBroker.{rpc}")),
            "{rpc} missing: {methods}"
        );
    }
    for rpc in ["DescribeSession", "ListSessions", "RevokeSession"] {
        assert!(
            !methods.contains(rpc),
            "the credential plane still lists {rpc}: {methods}"
        );
    }
    let admin_methods = grpcurl.list(Some("credbroker.v1.SessionAdmin")).await;
    let admin_methods = admin_methods.expect_ok("list SessionAdmin");
    for rpc in ["DescribeSession", "ListSessions", "RevokeSession"] {
        assert!(
            admin_methods.contains(&format!("credbroker.v1.SessionAdmin.{rpc}")),
            "{rpc} missing: {admin_methods}"
        );
    }

    let described = grpcurl.describe("credbroker.v1.CredentialBroker").await;
    let described = described.expect_ok("describe");
    assert!(
        described.contains("service CredentialBroker"),
        "{described}"
    );
    assert!(described.contains("rpc BindSession ( .credbroker.v1.BindSessionRequest ) returns ( .credbroker.v1.SessionInfo )"), "{described}");
    let message = grpcurl.describe("credbroker.v1.SessionInfo").await;
    assert!(
        message
            .expect_ok("describe message")
            .contains("session_handle")
    );

    for service in [
        "",
        "credbroker.v1.CredentialBroker",
        "credbroker.v1.SessionAdmin",
    ] {
        let health = grpcurl
            .call(
                "grpc.health.v1.Health/Check",
                &json!({ "service": service }),
            )
            .await;
        health.expect_ok("health check");
        assert_eq!(health.json()["status"], "SERVING", "health of {service:?}");
    }

    let session_id = new_session_id();
    let token = stack.rw_token("alice");
    let bound = grpcurl
        .call(
            "credbroker.v1.CredentialBroker/BindSession",
            &json!({ "session_id": session_id, "token": token }),
        )
        .await;
    bound.expect_ok("BindSession");
    let bound = bound.json();
    let handle = bound["sessionHandle"]
        .as_str()
        .expect("sessionHandle in the answer")
        .to_string();
    assert_eq!(bound["subject"], "alice");
    assert!(!bound.to_string().contains(&session_id) && !bound.to_string().contains(&token));

    let ops = stack.operator_token();
    let described = grpcurl
        .call_as(
            &ops,
            "credbroker.v1.SessionAdmin/DescribeSession",
            &json!({ "session_handle": handle }),
        )
        .await;
    described.expect_ok("DescribeSession");
    let described = described.json();
    assert_eq!(described["sessionHandle"], handle.as_str());
    assert_eq!(described["subject"], "alice");
    assert_eq!(described["roleArn"], stack.seed().roles.read_write.as_str());

    let listed = grpcurl
        .call_as(
            &ops,
            "credbroker.v1.SessionAdmin/ListSessions",
            &json!({ "subject": "alice" }),
        )
        .await;
    listed.expect_ok("ListSessions");
    assert_eq!(
        listed.json()["sessions"][0]["sessionHandle"],
        handle.as_str()
    );

    // Errors come back as gRPC status codes grpcurl can show.
    let refused = grpcurl
        .call(
            "credbroker.v1.CredentialBroker/ExchangeToken",
            &json!({ "token": "not-a-jwt" }),
        )
        .await;
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("Code: Unauthenticated"),
        "{}",
        refused.stderr
    );

    let revoked = grpcurl
        .call_as(
            &ops,
            "credbroker.v1.SessionAdmin/RevokeSession",
            &json!({ "session_handle": handle }),
        )
        .await;
    revoked.expect_ok("RevokeSession");
    assert_eq!(revoked.json()["revoked"], true);
    let gone = grpcurl
        .call_as(
            &ops,
            "credbroker.v1.SessionAdmin/DescribeSession",
            &json!({ "session_handle": handle }),
        )
        .await;
    assert!(gone.stderr.contains("Code: NotFound"), "{}", gone.stderr);
}
