//! The keep-alive S3 stand-in answers what the adapter benchmarks ask of it, as aws-sdk-s3 (the
//! SDK the adapter and the floor use) reads it: a stub the SDK misreads would make every adapter
//! figure on it meaningless.

use credbroker_bench::s3stub;
use e2e::aws::{self, StaticCreds};

#[tokio::test]
async fn the_sdk_reads_what_the_stub_serves() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(s3stub::run(listener));
    let s3 = aws::s3(
        &endpoint,
        StaticCreds {
            access_key_id: "AKIDSTUB".into(),
            secret_access_key: "unchecked".into(),
            session_token: None,
        },
    );
    s3.create_bucket().bucket("bench").send().await.unwrap();
    for i in 0..5 {
        // The SDK sends PutObject bodies aws-chunked with a checksum trailer.
        aws::put_object(
            &s3,
            "bench",
            &format!("dir/k {i}&<.txt"),
            format!("body {i}").as_bytes(),
        )
        .await
        .unwrap();
    }
    aws::put_object(&s3, "bench", "other.txt", b"x")
        .await
        .unwrap();

    let all = aws::list_keys(&s3, "bench").await.unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(
        all[0], "dir/k 0&<.txt",
        "keys are listed sorted and unescaped"
    );

    let first = s3
        .list_objects_v2()
        .bucket("bench")
        .prefix("dir/")
        .max_keys(3)
        .send()
        .await
        .unwrap();
    assert_eq!(first.contents().len(), 3);
    assert_eq!(first.is_truncated(), Some(true));
    let rest = s3
        .list_objects_v2()
        .bucket("bench")
        .prefix("dir/")
        .continuation_token(first.next_continuation_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.contents().len(), 2);
    assert_eq!(rest.is_truncated(), Some(false));
    assert_eq!(rest.contents()[0].size(), Some(6));
    assert!(rest.contents()[0].last_modified().is_some());

    let got = s3
        .get_object()
        .bucket("bench")
        .key("dir/k 3&<.txt")
        .range("bytes=2-")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_range(), Some("bytes 2-5/6"));
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&body[..], b"dy 3");

    let head = s3
        .head_object()
        .bucket("bench")
        .key("other.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(1));
    let missing = s3
        .get_object()
        .bucket("bench")
        .key("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(aws::error_code(&missing), "NoSuchKey");
    server.abort();
}
