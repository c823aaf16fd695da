//! `pause NAME` / `resume NAME`: merge-patch `spec.paused`; `hibernate NAME` / `wake NAME`:
//! `spec.hibernate`.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::Error;
use crate::api::CounterApp;

/// Set `spec.paused` to `paused`; the text to print.
pub async fn set(client: &Client, ns: &str, name: &str, paused: bool) -> Result<String, Error> {
    let api: Api<CounterApp> = Api::namespaced(client.clone(), ns);
    let patch = json!({"spec": {"paused": paused}});
    let app = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::from_kube("patch counterapps (spec.paused)", name, ns, e))?;
    Ok(if app.spec.paused {
        format!(
            "{ns}/{name} paused: the operator applies no changes and performs no failover until resumed\n"
        )
    } else {
        format!("{ns}/{name} resumed: the operator manages it again\n")
    })
}

/// Set `spec.hibernate` to `on`; the text to print.
pub async fn hibernate(client: &Client, ns: &str, name: &str, on: bool) -> Result<String, Error> {
    let api: Api<CounterApp> = Api::namespaced(client.clone(), ns);
    let patch = json!({"spec": {"hibernate": on}});
    let app = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::from_kube("patch counterapps (spec.hibernate)", name, ns, e))?;
    Ok(if app.spec.hibernate {
        format!(
            "{ns}/{name} hibernating: every web and Redis pod stops, the volumes are kept \
             (`kubectl wait --for=condition=Ready capp/{name}` waits for it)\n"
        )
    } else {
        format!("{ns}/{name} waking: the pods start from the kept volumes\n")
    })
}
