//! Clients behind a trusted proxy: the per-address limits see the forwarded client, and only when the
//! peer is trusted. The HTML opt-out form refuses posts from other sites.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;

use super::loopback;
use crate::both_stores;
use crate::helpers::{Server, Upstreams};

fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(loopback(n)))
        .build()
        .expect("client")
}

async fn optout_via(
    http: &reqwest::Client,
    server: &Server,
    forwarded_for: &str,
    email: &str,
) -> u16 {
    http.post(format!("{}/v1/optout", server.url))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({ "email": email }))
        .send()
        .await
        .expect("opt-out")
        .status()
        .as_u16()
}

both_stores! {
    #[tokio::test]
    async fn the_optout_limit_counts_the_forwarded_client_only_behind_a_trusted_proxy(mode) {
        let server = Server::start_in(
            mode,
            "[server]\ntrusted_proxies = [\"127.0.0.2\"]\n[exclusion]\noptout_per_minute = 1\noptout_burst = 1\n",
        )
        .await;
        let proxy = client_from(2);
        assert_eq!(
            optout_via(&proxy, &server, "198.51.100.1", "a@example.com").await,
            200
        );
        assert_eq!(
            optout_via(&proxy, &server, "198.51.100.2", "b@example.com").await,
            200,
            "another client behind the same proxy has its own budget"
        );
        assert_eq!(
            optout_via(
                &proxy,
                &server,
                "203.0.113.9, 198.51.100.1",
                "c@example.com"
            )
            .await,
            429,
            "the client the proxy saw, whatever it wrote before"
        );

        let direct = client_from(3);
        assert_eq!(
            optout_via(&direct, &server, "198.51.100.3", "d@example.com").await,
            200
        );
        assert_eq!(
            optout_via(&direct, &server, "198.51.100.4", "e@example.com").await,
            429,
            "an untrusted peer's header is ignored: both came from 127.0.0.3"
        );
        let stats = server.exclusion_stats().await;
        assert_eq!(
            stats["entries"], 3,
            "the refused ones changed nothing: {stats}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn requests_through_a_trusted_proxy_are_capped_per_forwarded_client() {
    let up = Upstreams::start().await;
    let email = "proxied.slow@example.com";
    up.slow_gravatar_hit(email, "Pro Xied", Duration::from_millis(800));
    let server = Server::start(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\nmax_connections_per_client = 1\n{}",
        up.config()
    ))
    .await;
    let slow = tokio::spawn(
        server
            .post("/v1/lookup")
            .header("forwarded", "for=198.51.100.7")
            .json(&json!({ "email": email }))
            .send(),
    );
    let slots = server.state.connections.per_client.clone();
    let client: IpAddr = "198.51.100.7".parse().expect("ip");
    super::wait_until("the forwarded client's lookup to be in progress", || {
        slots.held(client) == 1
    })
    .await;

    let same = server
        .get("/v1/sources")
        .header("forwarded", "for=198.51.100.7")
        .send()
        .await
        .expect("sources");
    assert_eq!(same.status(), 429, "the forwarded client is at its cap");
    assert!(same.headers().contains_key("retry-after"));
    let other = server
        .get("/v1/sources")
        .header("forwarded", "for=198.51.100.8")
        .send()
        .await
        .expect("sources");
    assert_eq!(other.status(), 200, "another client through the same proxy");
    let answered = slow.await.expect("task").expect("lookup");
    assert_eq!(answered.status(), 200);
    server.stop().await;
}

both_stores! {
    #[tokio::test]
    async fn the_optout_form_refuses_a_post_from_another_site_and_takes_its_own(mode) {
        let server = Server::start_in(mode, "").await;
        let form = |site: &'static str| {
            server
                .http
                .post(format!("{}/optout", server.url))
                .header("sec-fetch-site", site)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("email=form.csrf%40example.com")
        };

        let forged = form("cross-site").send().await.expect("post");
        assert_eq!(forged.status(), 403);
        let page = forged.text().await.expect("html");
        assert!(
            page.contains("href=\"/optout\""),
            "points to the real form: {page}"
        );
        assert_eq!(
            server.exclusion_stats().await["entries"],
            0,
            "nothing recorded"
        );

        let own = form("same-origin").send().await.expect("post");
        assert_eq!(own.status(), 200);
        assert_eq!(server.exclusion_stats().await["entries"], 1);
        server.stop().await;
    }
}
