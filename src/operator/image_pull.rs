//! Pods of a stack that cannot pull their image (a wrong registry password, a missing
//! tag, an untrusted registry CA): PURE, from the pods in the cache to what the status
//! says. Without this a stack with a bad pull secret only waits ("waiting for web pods")
//! until the Deployment's progress deadline, ten minutes later, names nothing useful.
//!
//! The kubelet alternates a failing pod between `ErrImagePull` (the registry's error
//! text) and `ImagePullBackOff` (whose message may not repeat it). The status names the
//! cause in words that do not change between the two, so a failing stack does not
//! rewrite its status on every pull retry.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::labels::{self, Component};

/// Waiting reasons of a container whose image cannot be pulled (the kubelet's
/// `images.Err*` reasons).
pub const REASONS: [&str; 7] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "ErrImageInspect",
    "RegistryUnavailable",
    "SignatureValidationFailed",
];

/// What cannot be pulled, and why when some pod's message says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullFailure {
    /// E.g. `web pods cannot pull registry.example.com:5000/counterstack:0.1.0`.
    pub what: String,
    /// The cause in stable words; `None` when every failing pod is only backing off with
    /// a message that does not say (the status then keeps the cause it had).
    pub cause: Option<String>,
}

impl PullFailure {
    /// The condition message: `what: cause`, or `previous` when it is about the same
    /// image and the cause is unknown now (back-off), or `what` with a pointer.
    pub fn message(&self, previous: Option<&str>) -> String {
        match &self.cause {
            Some(c) => format!("{}: {c}", self.what),
            None => match previous.filter(|p| p.starts_with(&self.what)) {
                Some(p) => p.to_string(),
                None => format!("{} (backing off; see the pods' Events)", self.what),
            },
        }
    }
}

/// Pure: the first (by component, then image) image that some pod cannot pull.
/// Terminating pods are ignored (an old ReplicaSet's pod going away is not the problem).
pub fn failure(pods: &[Pod]) -> Option<PullFailure> {
    // (component, image, the best cause any pod gives)
    let mut found: Vec<(String, String, Option<String>)> = Vec::new();
    for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let component = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::COMPONENT))
            .map_or(Component::Web.as_str(), String::as_str);
        let containers = pod.status.iter().flat_map(|s| {
            s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten())
        });
        for c in containers {
            let Some((reason, message)) = pull_error(c) else { continue };
            let why = cause(reason, message);
            match found.iter_mut().find(|(comp, image, _)| comp == component && *image == c.image) {
                Some(entry) => {
                    if entry.2.is_none() {
                        entry.2 = why;
                    }
                }
                None => found.push((component.to_string(), c.image.clone(), why)),
            }
        }
    }
    found.sort();
    found.into_iter().next().map(|(component, image, cause)| PullFailure {
        what: format!("{component} pods cannot pull {image}"),
        cause,
    })
}

/// The waiting reason and message of a container that cannot pull its image.
fn pull_error(c: &ContainerStatus) -> Option<(&str, &str)> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref().filter(|r| REASONS.contains(r))?;
    Some((reason, waiting.message.as_deref().unwrap_or("")))
}

/// The cause in stable words, from the registry's or the runtime's error text.
fn cause(reason: &str, message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    let why = if reason == "InvalidImageName" {
        "the image reference is invalid (InvalidImageName)"
    } else if reason == "ErrImageNeverPull" {
        "imagePullPolicy is Never and the image is not on the node (ErrImageNeverPull)"
    } else if has(&[
        "401 unauthorized",
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
    ]) {
        "the registry refused the credentials (401 Unauthorized): check the pull Secret \
         (spec.imagePullSecrets of the CounterApp, imagePullSecrets of the operator's chart) and its password"
    } else if has(&["403 forbidden", "forbidden", "denied"]) {
        "the registry denied access (403 Forbidden): check the pull Secret's rights on this repository"
    } else if has(&["x509", "certificate"]) {
        "the node does not trust the registry's TLS certificate (x509): install its CA on the nodes"
    } else if has(&["not found", "manifest unknown"]) {
        "the registry has no such image or tag (not found)"
    } else if has(&[
        "no such host",
        "connection refused",
        "i/o timeout",
        "dial tcp",
        "network is unreachable",
    ]) {
        "the registry cannot be reached from the node"
    } else if reason == "ImagePullBackOff" {
        // The back-off message repeats no cause (or one we did not recognise).
        return None;
    } else if message.is_empty() {
        return Some(format!("{reason} (see the pods' Events)"));
    } else {
        // Unrecognised: the reason and the first line of the error, at most 200 bytes.
        let first = message.lines().next().unwrap_or("");
        let cut = first.char_indices().map(|(i, _)| i).take_while(|i| *i <= 200).last().unwrap_or(0);
        let short = if first.len() > 200 { &first[..cut] } else { first };
        return Some(format!("{reason}: {short}"));
    };
    Some(why.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::operator::cache::{Slim, SlimPod};

    const IMAGE: &str = "127.0.0.1:5443/counterstack:0.1.0";
    /// containerd's text for a wrong password (as the kubelet reports it).
    const DENIED: &str = "failed to pull and unpack image \"127.0.0.1:5443/counterstack:0.1.0\": failed to resolve \
        reference \"127.0.0.1:5443/counterstack:0.1.0\": pulling from host 127.0.0.1:5443 failed with status code \
        [manifests 0.1.0]: 401 Unauthorized";

    fn pod(component: &str, image: &str, waiting: Option<(&str, &str)>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("demo-{component}-x")),
                labels: Some(BTreeMap::from([(labels::COMPONENT.to_string(), component.to_string())])),
                ..Default::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: component.into(),
                    image: image.into(),
                    state: Some(ContainerState {
                        waiting: waiting.map(|(r, m)| ContainerStateWaiting {
                            reason: Some(r.into()),
                            message: Some(m.into()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn running_or_starting_pods_are_no_failure() {
        assert_eq!(failure(&[]), None);
        let pods = [
            pod("web", IMAGE, None),
            pod("web", IMAGE, Some(("ContainerCreating", ""))),
            pod("redis", "redis:7.4.2", Some(("CrashLoopBackOff", "back-off 10s"))),
        ];
        assert_eq!(failure(&pods), None);
    }

    #[test]
    fn a_wrong_password_names_the_image_and_the_401() {
        let f =
            failure(&[pod("web", IMAGE, None), pod("web", IMAGE, Some(("ErrImagePull", DENIED)))]).unwrap();
        assert_eq!(f.what, format!("web pods cannot pull {IMAGE}"));
        let msg = f.message(None);
        assert!(msg.contains("401 Unauthorized") && msg.contains("spec.imagePullSecrets"), "{msg}");
    }

    #[test]
    fn the_message_is_the_same_for_err_image_pull_and_back_off() {
        let pulling = failure(&[pod("web", IMAGE, Some(("ErrImagePull", DENIED)))]).unwrap();
        let backoff_with_cause = failure(&[pod(
            "web",
            IMAGE,
            Some((
                "ImagePullBackOff",
                &format!("Back-off pulling image \"{IMAGE}\": ErrImagePull: {DENIED}"),
            )),
        )])
        .unwrap();
        assert_eq!(pulling, backoff_with_cause);
        // A back-off that says nothing: the cause the status had is kept.
        let bare =
            failure(&[pod("web", IMAGE, Some(("ImagePullBackOff", "Back-off pulling image")))]).unwrap();
        assert_eq!(bare.cause, None);
        let before = pulling.message(None);
        assert_eq!(bare.message(Some(&before)), before);
        // ...but not one about another image.
        let other = "web pods cannot pull other:1: the registry has no such image or tag (not found)";
        assert!(bare.message(Some(other)).starts_with(&bare.what));
        assert!(bare.message(Some(other)).contains("backing off"));
        // One pod backing off without a cause, another with one: the cause wins.
        let mixed = failure(&[
            pod("web", IMAGE, Some(("ImagePullBackOff", "Back-off pulling image"))),
            pod("web", IMAGE, Some(("ErrImagePull", DENIED))),
        ])
        .unwrap();
        assert_eq!(mixed, pulling);
    }

    #[test]
    fn causes_are_told_apart() {
        let why = |reason, msg| cause(reason, msg).unwrap_or_default();
        assert!(
            why("ErrImagePull", "rpc error: x509: certificate signed by unknown authority").contains("x509")
        );
        assert!(why("ErrImagePull", "reg.example/app:9: not found").contains("not found"));
        assert!(
            why("ErrImagePull", "dial tcp 10.0.0.1:5000: connect: connection refused").contains("reached")
        );
        assert!(why("ErrImagePull", "403 Forbidden").contains("403"));
        // Numbers inside digests and ports are no status codes.
        let odd = why("ErrImagePull", "reg:5401/app@sha256:4031: weird");
        assert_eq!(odd, "ErrImagePull: reg:5401/app@sha256:4031: weird");
        assert!(why("InvalidImageName", "couldn't parse image name").contains("invalid"));
        assert_eq!(why("ErrImagePull", ""), "ErrImagePull (see the pods' Events)");
        let long = "é".repeat(300);
        let short = why("ErrImagePull", &long);
        assert!(short.len() < 230 && short.starts_with("ErrImagePull: é"), "{short}");
    }

    #[test]
    fn terminating_pods_are_ignored_and_components_are_ordered() {
        let mut old = pod("web", "old:1", Some(("ErrImagePull", DENIED)));
        old.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert_eq!(failure(&[old]), None);
        let f = failure(&[
            pod("web", IMAGE, Some(("ErrImagePull", DENIED))),
            pod("redis", "reg/redis:7", Some(("ErrImagePull", "not found"))),
        ])
        .unwrap();
        assert_eq!(f.what, "redis pods cannot pull reg/redis:7");
    }

    #[test]
    fn the_pod_cache_keeps_what_the_check_reads_and_no_web_pod_churn() {
        let mut failing = pod("web", IMAGE, Some(("ErrImagePull", DENIED)));
        failing.metadata.labels = Some(labels::selector("demo", Component::Web));
        let slim = SlimPod::slim(&failing);
        assert_eq!(failure(&[slim.restore("ns", "demo-web-x")]), failure(&[failing.clone()]));
        // A web pod getting its IP or turning Ready changes nothing kept: no wake-up.
        let mut running = pod("web", IMAGE, None);
        running.metadata.labels = Some(labels::selector("demo", Component::Web));
        let before = SlimPod::slim(&running);
        if let Some(s) = running.status.as_mut() {
            s.pod_ip = Some("10.88.0.7".into());
        }
        assert_eq!(SlimPod::slim(&running), before);
        assert_ne!(SlimPod::slim(&failing), before);
    }
}
