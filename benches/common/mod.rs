//! What several benches read of their own process.

/// A `/proc/self/status` field in KiB (`VmRSS:`, `VmHWM:`); 0 where it cannot be read.
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Polls `id` until it is `done` (every 100 ms); panics if it fails.
pub async fn wait_done(
    service: &enrichd::batch::BatchService,
    tenant: &str,
    id: enrichd::blob::BatchId,
) -> enrichd::batch::BatchMeta {
    use enrichd::batch::BatchStatus;
    loop {
        let m = service.get(tenant, id).await.expect("get");
        match m.status {
            BatchStatus::Done => return m,
            BatchStatus::Failed => panic!("batch failed: {:?}", m.error),
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

/// Reads `id`'s CSV result to its end; how many bytes it was.
pub async fn download_csv(
    service: &enrichd::batch::BatchService,
    tenant: &str,
    id: enrichd::blob::BatchId,
) -> u64 {
    use futures::StreamExt;
    let mut stream = service
        .result(tenant, id, enrichd::batch::Format::Csv)
        .await
        .expect("result");
    let mut bytes = 0u64;
    while let Some(piece) = stream.next().await {
        bytes += piece.expect("piece").len() as u64;
    }
    bytes
}
