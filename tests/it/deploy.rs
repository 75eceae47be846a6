//! The shipped deployment files parse and point at what the binary really uses: its port, its health
//! and readiness paths, its configuration file, and only environment variables it reads.

use std::path::Path;

use serde_json::Value;

use crate::helpers::Server;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML document of a file, merge keys applied, as JSON values.
fn yaml(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(path)).expect(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let mut v = serde_yaml_ng::Value::deserialize(doc).expect(path);
            v.apply_merge().expect("merge keys");
            serde_json::to_value(v).expect("json")
        })
        .collect()
}

use serde::Deserialize;

/// The environment variables the binary reads, besides config overrides (`ENRICHD_<SECTION>__<KEY>`,
/// checked by loading them) and `AWS_*` (checked against the S3 client's own keys). Each must appear
/// in the source, so this list cannot name a variable the code dropped.
const READ_BY_THE_BINARY: [&str; 8] = [
    "ENRICHD_EXCLUSION_KEY",
    "ENRICHD_STORAGE_KEY",
    "ENRICHD_STORAGE_KEY_PREVIOUS",
    "ENRICHD_CONFIG",
    "ENRICHD_LISTEN",
    "ENRICHD_DATA_DIR",
    "ENRICHD_LOG",
    "GITHUB_TOKEN",
];

fn source_mentions(name: &str) -> bool {
    crate::helpers::files_under(&root().join("src"))
        .iter()
        .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(&format!("\"{name}\""))))
}

/// Fails unless the binary reads `name` (with `value`, for config overrides).
fn assert_known_variable(name: &str, value: &str) {
    if name.starts_with("AWS_") {
        assert!(
            name.to_ascii_lowercase()
                .parse::<object_store::aws::AmazonS3ConfigKey>()
                .is_ok(),
            "{name} is not an S3 client setting"
        );
    } else if name.starts_with("ENRICHD_") && name.contains("__") {
        let vars = vec![(name.to_string(), value.to_string())];
        enrichd::config::Config::from_toml("", &vars)
            .unwrap_or_else(|e| panic!("{name}={value} is refused: {e}"));
    } else {
        assert!(
            READ_BY_THE_BINARY.contains(&name),
            "{name} is not read by enrichd"
        );
        assert!(
            source_mentions(name),
            "{name} no longer appears in the source"
        );
    }
}

fn port_of(listen: &str) -> u64 {
    listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

#[tokio::test]
async fn the_kubernetes_manifests_point_at_the_binarys_port_paths_config_and_variables() {
    let docs: Vec<Value> = [
        "deploy/kubernetes/configmap.yaml",
        "deploy/kubernetes/secret.yaml",
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/service.yaml",
        "deploy/kubernetes/hpa.yaml",
    ]
    .iter()
    .flat_map(|p| yaml(p))
    .collect();
    let kustomized = yaml("deploy/kubernetes/kustomization.yaml");
    assert_eq!(kustomized[0]["resources"].as_array().map(Vec::len), Some(5));
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let (deployment, service, config, secret, hpa) = (
        kind("Deployment"),
        kind("Service"),
        kind("ConfigMap"),
        kind("Secret"),
        kind("HorizontalPodAutoscaler"),
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("name").to_string();
            (name, e["value"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    let var = |n: &str| {
        env.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .expect(n)
    };
    for (name, value) in &env {
        assert_known_variable(name, value);
    }
    let secrets = secret["stringData"].as_object().expect("stringData");
    for name in secrets.keys() {
        assert_known_variable(name, "");
    }
    for needed in [
        "ENRICHD_EXCLUSION_KEY",
        "ENRICHD_STORAGE_KEY",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(secrets.contains_key(needed), "the Secret lacks {needed}");
    }
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"],
        secret["metadata"]["name"]
    );

    // The port the binary listens on is the container's port, which the probes and Service use.
    let port = &container["ports"][0];
    assert_eq!(
        port["containerPort"].as_u64(),
        Some(port_of(&var("ENRICHD_LISTEN")))
    );
    let probes = [&container["readinessProbe"], &container["livenessProbe"]];
    for probe in probes {
        assert_eq!(probe["httpGet"]["port"], port["name"]);
    }
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port["name"]);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(
        container["lifecycle"]["preStop"].is_object(),
        "a preStop drain"
    );
    assert!(
        container["resources"]["requests"].is_object()
            && container["resources"]["limits"].is_object()
    );

    // The config file is mounted where ENRICHD_CONFIG says, and is a valid shared-store config.
    let mount = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == "config")
        .expect("config mount");
    assert_eq!(
        mount["mountPath"].as_str(),
        Some(var("ENRICHD_CONFIG").as_str())
    );
    let toml = config["data"][mount["subPath"].as_str().expect("subPath")]
        .as_str()
        .expect("config text");
    let loaded = enrichd::config::Config::from_toml(toml, &[]).expect("the shipped config loads");
    assert!(loaded.config.store.url_or(Path::new("/data")).is_shared());
    let policy: enrichd::config::Retention =
        toml::from_str(enrichd::config::RETENTION_POLICY).expect("policy");
    assert_eq!(
        loaded.config.retention, policy,
        "the ConfigMap carries the shipped policy"
    );

    // The probe paths are the binary's: ready and healthy on a real server.
    let server = Server::start("").await;
    for probe in probes {
        let path = probe["httpGet"]["path"].as_str().expect("path");
        let resp = server
            .http
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .expect("probe");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
}

#[test]
fn compose_runs_two_replicas_on_minio_with_the_binarys_variables() {
    let compose = yaml("deploy/compose.yaml").remove(0);
    let services = compose["services"].as_object().expect("services");
    let replicas: Vec<&Value> = services
        .iter()
        .filter(|(name, _)| name.starts_with("enrichd-"))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(replicas.len(), 2);
    assert!(services.contains_key("minio"));
    for s in replicas {
        let env = s["environment"].as_object().expect("environment");
        for (name, value) in env {
            let value = value.as_str().unwrap_or_default();
            if !value.starts_with("${") {
                assert_known_variable(name, value);
            }
        }
        assert!(
            env["ENRICHD_STORE__URL"]
                .as_str()
                .is_some_and(|u| u.starts_with("s3://"))
        );
        assert_eq!(env["AWS_ENDPOINT_URL"], "http://minio:9000");
        let published = s["ports"][0].as_str().expect("port");
        assert!(published.ends_with(&format!(
            ":{}",
            port_of(env["ENRICHD_LISTEN"].as_str().expect("listen"))
        )));
        assert_eq!(s["build"]["dockerfile"], "Containerfile");
    }
}

#[test]
fn the_containerfile_runs_the_binary_non_root_on_its_port_with_its_health_check() {
    let text = std::fs::read_to_string(root().join("Containerfile")).expect("Containerfile");
    let line = |start: &str| {
        text.lines()
            .rfind(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start}"))
            .to_string()
    };
    assert!(
        text.matches("\nFROM ").count() == 2 && text.contains(" AS build"),
        "multi-stage"
    );
    let listen = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ENRICHD_LISTEN="))
        .expect("ENRICHD_LISTEN");
    assert_eq!(line("EXPOSE"), format!("EXPOSE {}", port_of(listen)));
    assert!(line("USER").contains("65532"), "not root");
    assert!(text.contains("CMD [\"/usr/local/bin/enrichd\", \"healthcheck\"]"));
    assert!(line("ENTRYPOINT").contains("/usr/local/bin/enrichd"));
    assert!(
        text.contains("cp -r policies"),
        "policies/ ships in the image"
    );
    for word in text.split_whitespace() {
        if let Some((name, value)) = word.split_once('=')
            && name.starts_with("ENRICHD_")
        {
            assert_known_variable(name, value);
        }
    }
}

#[tokio::test]
async fn the_health_check_subcommand_answers_for_a_running_server() {
    let server = Server::start("").await;
    let url = format!("{}/healthz", server.url);
    let ok = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::binary::bin())
            .args(["healthcheck", "--url", &url])
            .env_clear()
            .status()
            .expect("run")
    })
    .await
    .expect("join");
    assert!(ok.success());
    let down = tokio::task::spawn_blocking(|| {
        std::process::Command::new(crate::binary::bin())
            .args(["healthcheck", "--url", "http://127.0.0.1:9/healthz"])
            .env_clear()
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("did not answer"));
}
