//! Black-box: the shadow store survives a restart on the same SQLite file.

mod common;

use common::*;

#[tokio::test]
async fn user_survives_restart_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite");

    let first = start_on(&path).await;
    let id = first.create_user("durable@example.com").await;
    first.running.stop().await.unwrap();

    let second = start_on(&path).await;
    let a = second.get(&format!("/Users/{id}")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["userName"], "durable@example.com");
    let f = second.get(&filter_path("Users", "userName eq \"durable@example.com\"")).await;
    assert_eq!(f.body["Resources"][0]["id"], id.as_str());
    // Uniqueness still enforced after the restart.
    assert_eq!(second.post("/Users", entra_user("DURABLE@example.com")).await.status, 409);
}
