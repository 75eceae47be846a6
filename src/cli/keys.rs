//! `enrichd keys new|list|revoke`: API keys in the configured store (a running server, or every
//! replica on a shared store, sees a change within about a second).

use std::sync::Arc;

use clap::Subcommand;

use super::{Common, Failure, load, role_name};
use crate::app;
use crate::auth::{KeyStore, Role};
use crate::store::StoreUrl;
use crate::telemetry::Metrics;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an API key; only its hash is stored. The key is printed once, alone on the last line.
    New {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        common: Common,
    },
    /// List the keys: ids, tenants, roles, creation and revocation dates (never a key).
    List {
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Revoke a key by its id (`k_...`, from `keys list`); every running server refuses it within
    /// 2 seconds.
    Revoke {
        id: String,
        #[command(flatten)]
        common: Common,
    },
}

async fn open(common: &Common) -> Result<KeyStore, Failure> {
    let (loaded, data_dir) = load(common)?;
    let store = app::open_store(&loaded, &data_dir, Arc::new(Metrics::new()))
        .await
        .map_err(Failure::runtime)?;
    let legacy = match store.url() {
        StoreUrl::File(dir) => Some(dir.join("keys.json")),
        StoreUrl::S3 { .. } => None,
    };
    KeyStore::open(&store, legacy.as_deref())
        .await
        .map_err(Failure::runtime)
}

pub async fn run(command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::New {
            tenant,
            admin,
            common,
        } => {
            let keys = open(&common).await?;
            let role = if admin { Role::Admin } else { Role::Tenant };
            let key = keys.create(&tenant, role).await.map_err(|e| match e {
                crate::auth::KeyError::TenantName => Failure::usage(e),
                e => Failure::runtime(e),
            })?;
            println!(
                "Created {} key {} for tenant '{}'. It is shown once:",
                role_name(role),
                key.key_id,
                key.tenant
            );
            println!("{}", key.key);
            Ok(())
        }
        KeysCommand::List { json, common } => {
            let keys = open(&common).await?;
            for info in keys.list() {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(&info).map_err(Failure::runtime)?
                    );
                } else {
                    println!(
                        "{:<16} {:<24} {:<7} {:<21} {}",
                        info.id,
                        info.tenant,
                        role_name(info.role),
                        info.created_at,
                        info.revoked_at
                            .as_deref()
                            .map_or_else(String::new, |at| format!("revoked {at}"))
                    );
                }
            }
            Ok(())
        }
        KeysCommand::Revoke { id, common } => {
            let keys = open(&common).await?;
            let info = keys.revoke(&id).await.map_err(|e| match e {
                crate::auth::KeyError::NotFound(_) => Failure::usage(e),
                e => Failure::runtime(e),
            })?;
            println!(
                "Revoked {} key {} of tenant '{}'; running servers refuse it within 2 seconds.",
                role_name(info.role),
                info.id,
                info.tenant
            );
            Ok(())
        }
    }
}
