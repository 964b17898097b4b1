//! The access review when the apiserver does not answer: a server that accepts and never
//! replies, and a port that refuses. Either way the request is denied in bounded time, with a
//! message that says the permission could not be checked; an admin group needs no answer.

#![allow(clippy::unwrap_used, reason = "a test that cannot build its input should panic")]

use std::time::{Duration, Instant};

use evpn_webhook::access::{Access, Need, Reviews};
use evpn_webhook::rules::Policy;
use k8s_openapi::api::authentication::v1::UserInfo;

const TIMEOUT: Duration = Duration::from_millis(300);

fn access(url: &str) -> Access {
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    Access::new(Some(Reviews::new(client, TIMEOUT, Duration::from_secs(10))), Default::default())
}

fn user(groups: &[&str]) -> UserInfo {
    UserInfo {
        username: Some("system:serviceaccount:argocd:gitops".into()),
        groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
        ..Default::default()
    }
}

fn no_admins() -> Policy {
    Policy { admin_groups: Vec::new(), ..Policy::default() }
}

fn need() -> Need {
    Need { action: "creating an EVPN", vtep: Some("fabric".into()) }
}

/// An apiserver that accepts connections and never answers.
async fn silent_apiserver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    url
}

#[tokio::test]
async fn a_silent_apiserver_denies_within_the_timeout() {
    let access = access(&silent_apiserver().await);
    let started = Instant::now();
    let denial = access.check(&no_admins(), &user(&["system:serviceaccounts"]), &need()).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < TIMEOUT + Duration::from_millis(500), "took {took:?}");
    for needle in
        ["creating an EVPN", "verb \"manage\"", "\"vteps\"", "VTEP \"fabric\"", "could not be checked", "300ms"]
    {
        assert!(denial.contains(needle), "the denial should mention {needle:?}: {denial}");
    }
}

#[tokio::test]
async fn a_refusing_apiserver_denies_saying_the_review_failed() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let denial = access(&url).check(&no_admins(), &user(&[]), &need()).await.unwrap_err();
    assert!(denial.contains("the SubjectAccessReview failed") && denial.contains("retry"), "{denial}");
}

#[tokio::test]
async fn the_operator_records_its_allocations_without_asking() {
    let access = access(&silent_apiserver().await);
    let operator = UserInfo { username: Some(Policy::default().operator_user), ..Default::default() };
    access
        .check(&no_admins(), &operator, &Need { action: "changing an EVPN", vtep: Some("fabric".into()) })
        .await
        .unwrap();
}

#[tokio::test]
async fn admin_groups_pass_without_asking() {
    let access = access(&silent_apiserver().await);
    let started = Instant::now();
    let policy = Policy { admin_groups: vec!["ops".into()], ..Policy::default() };
    access.check(&policy, &user(&["system:authenticated", "ops"]), &need()).await.unwrap();
    assert!(started.elapsed() < TIMEOUT, "an admin group should not wait for the apiserver");
}
