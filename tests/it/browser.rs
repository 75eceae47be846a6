//! The `/app` page in headless Chromium: paste a key, drop a CSV, watch it finish, download, delete.
//! Everything stays on loopback: the page, the API and the upstream fake.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::cdp::Browser;
use crate::helpers::{Reply, Server, Upstreams};

/// Polls `condition` (a JS expression) until it is truthy, then returns `value`.
fn wait_for(condition: &str, value: &str) -> String {
    format!(
        "new Promise((resolve, reject) => {{ const t0 = Date.now(); \
         const tick = () => {{ try {{ if ({condition}) {{ resolve({value}); return; }} }} catch (e) {{}} \
         if (Date.now() - t0 > 20000) {{ reject(new Error('timed out waiting for: ' + {cond_str})); return; }} \
         setTimeout(tick, 50); }}; tick(); }})",
        cond_str = serde_json::to_string(condition).expect("json")
    )
}

/// A new tab showing `/app`, loaded.
async fn open_app(browser: &mut Browser, server: &Server) -> String {
    let page = browser.new_page().await;
    browser
        .call(
            Some(&page),
            "Page.navigate",
            json!({"url": format!("{}/app", server.url)}),
        )
        .await;
    browser
        .eval(
            &page,
            &wait_for(
                "document.readyState === 'complete' && document.getElementById('key')",
                "true",
            ),
        )
        .await;
    page
}

/// JS statements that paste `key` in the key field as a user would.
fn enter_key(key: &str) -> String {
    let key_js = serde_json::to_string(key).expect("json");
    format!(
        "const k = document.getElementById('key'); k.value = {key_js}; \
         k.dispatchEvent(new Event('change'));"
    )
}

#[tokio::test]
async fn the_app_page_uploads_by_drag_and_drop_follows_progress_downloads_and_deletes() {
    let up = Upstreams::start().await;
    up.gravatar_profile(
        "ada@analytical.example",
        "Ada Lovelace",
        "Analytical Engines",
        None,
    );
    let server = Server::start(&format!(
        "[sources.gravatar]\nbase_url = \"{}\"\n",
        up.gravatar.url
    ))
    .await;
    let downloads = tempfile::tempdir().expect("downloads");
    let mut browser = Browser::launch().await;
    browser
        .call(
            None,
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": downloads.path().to_str().expect("path")}),
        )
        .await;
    let page = open_app(&mut browser, &server).await;

    let labelled = browser
        .eval(
            &page,
            "[...document.querySelectorAll('input')].every(i => i.labels && i.labels.length > 0)",
        )
        .await;
    assert_eq!(labelled, json!(true), "every input has a label");

    // Paste the key, drop a file on the drop zone, submit.
    browser
        .eval(
            &page,
            &format!(
                "(() => {{ {} \
                 const dt = new DataTransfer(); \
                 dt.items.add(new File(['email,note\\nada@analytical.example,=1+1\\nbob@example.org,plain\\n'], 'people.csv', {{type: 'text/csv'}})); \
                 document.getElementById('drop').dispatchEvent(new DragEvent('drop', {{dataTransfer: dt, bubbles: true, cancelable: true}})); \
                 return document.getElementById('chosen').textContent; }})()",
                enter_key(&server.key)
            ),
        )
        .await;
    let chosen = browser
        .eval(&page, "document.getElementById('chosen').textContent")
        .await;
    assert!(
        chosen.as_str().unwrap_or("").contains("people.csv"),
        "{chosen}"
    );
    browser
        .eval(&page, "document.getElementById('upload').click()")
        .await;

    let id = browser
        .eval(
            &page,
            &wait_for(
                "document.querySelector('#batches tr[data-status=\"done\"]')",
                "document.querySelector('#batches tr[data-status=\"done\"]').dataset.id",
            ),
        )
        .await;
    let id = id.as_str().expect("batch id").to_string();
    let progress = browser
        .eval(
            &page,
            "document.querySelector('#batches tr[data-status=\"done\"]').textContent",
        )
        .await;
    assert!(
        progress.as_str().unwrap_or("").contains("2 / 2 (1 found)"),
        "{progress}"
    );
    let url = browser
        .eval(
            &page,
            "location.href + '|' + JSON.stringify(sessionStorage) + JSON.stringify(localStorage)",
        )
        .await;
    assert!(
        !url.as_str().unwrap_or("").contains(&server.key),
        "the key never lands in the URL or storage"
    );

    // Download through the page's button and read the file Chromium saved.
    browser
        .eval(
            &page,
            "[...document.querySelectorAll('#batches tr[data-status=\"done\"] button')].find(b => b.textContent === 'Download CSV').click()",
        )
        .await;
    let file = downloads.path().join(format!("enrichd-{id}.csv"));
    let start = Instant::now();
    while !file.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no download appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&file).expect("downloaded file");
    assert!(text.starts_with("email,note,enrichd_status"), "{text}");
    assert!(
        text.contains("ada@analytical.example,'=1+1,found,Ada Lovelace"),
        "{text}"
    );

    // Delete from the page: the row goes and the API no longer knows the batch.
    browser
        .eval(
            &page,
            "[...document.querySelectorAll('#batches tr[data-status=\"done\"] button')].find(b => b.textContent === 'Delete').click()",
        )
        .await;
    browser
        .eval(
            &page,
            &wait_for(
                "document.getElementById('message').textContent.startsWith('Deleted batch')",
                "true",
            ),
        )
        .await;
    let rows = browser
        .eval(
            &page,
            "document.querySelectorAll('#batches tr[data-id]').length",
        )
        .await;
    assert_eq!(rows, json!(0));
    let status = server
        .get(&format!("/v1/batches/{id}"))
        .send()
        .await
        .expect("get")
        .status()
        .as_u16();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_app_page_shows_a_failed_batch_and_why() {
    let up = Upstreams::start().await;
    up.gravatar
        .otherwise(Reply::status(503, r#"{"error":"Service Unavailable"}"#));
    let server = Server::start(&format!(
        "[sources.gravatar]\nbase_url = \"{}\"\n",
        up.gravatar.url
    ))
    .await;
    let uploaded = server
        .post("/v1/batches")
        .header("content-type", "text/csv")
        .body("email\na@example.org\nb@example.org\n")
        .send()
        .await
        .expect("upload");
    assert_eq!(uploaded.status().as_u16(), 202);
    let mut browser = Browser::launch().await;
    let page = open_app(&mut browser, &server).await;

    browser
        .eval(
            &page,
            &format!("(() => {{ {} return true; }})()", enter_key(&server.key)),
        )
        .await;
    let status = browser
        .eval(
            &page,
            &wait_for(
                "document.querySelector('#batches tr[data-status=\"failed\"]')",
                "document.querySelector('#batches tr[data-status=\"failed\"] td.status').textContent",
            ),
        )
        .await;

    assert_eq!(
        status,
        json!(
            "failedno row could be enriched; the commonest reason: every source asked failed \
             (gravatar error)"
        )
    );
    let buttons = browser
        .eval(
            &page,
            "[...document.querySelectorAll('#batches tr[data-status=\"failed\"] button')].map(b => b.textContent).join(',')",
        )
        .await;
    assert_eq!(buttons, json!("Delete"), "nothing to download");
}
