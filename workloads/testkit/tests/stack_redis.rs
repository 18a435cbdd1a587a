//! Proves the local Redis is the real server with authentication on: a value
//! round-trips with the password, and a client without it is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly

use paystream_testkit::{Stack, unique_name};
use redis::AsyncCommands;

#[tokio::test]
async fn round_trips_with_auth() {
    let stack = Stack::from_env();
    let client = redis::Client::open(stack.redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = unique_name("stack_probe");
    let _: () = conn.set_ex(&key, "value-1", 60).await.unwrap();
    let got: String = conn.get(&key).await.unwrap();
    assert_eq!(got, "value-1");
    let _: () = conn.del(&key).await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        info.contains("redis_version:7."),
        "Redis 7 expected: {info}"
    );
}

#[tokio::test]
async fn refuses_a_client_without_the_password() {
    let stack = Stack::from_env();
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", stack.redis_port)).unwrap();
    let result = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("GET")
            .arg("anything")
            .query_async::<Option<String>>(&mut conn)
            .await
    }
    .await;
    let err = result.unwrap_err();
    assert!(err.to_string().to_uppercase().contains("NOAUTH"), "{err}");
}
