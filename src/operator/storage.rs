//! Growing the Redis volumes (`spec.redis.storage.size`). A StatefulSet's
//! `volumeClaimTemplates` are immutable: applying a larger size is refused by the API
//! server on every retry, which wedged the stack (and every later spec change behind it).
//! Instead, when the size grows:
//!
//! 1. every PVC of the stack below the new size is patched to it. The API server refuses
//!    when the StorageClass does not allow expansion: that is reported as `Stalled`
//!    (reason [`NOT_EXPANDABLE`]) with the server's words, and the StatefulSet keeps its
//!    current template so the rest of the spec is still applied;
//! 2. the StatefulSet is deleted with `propagationPolicy: Orphan` (its pods keep running)
//!    and applied again, with the new template, once it is gone. The new StatefulSet
//!    adopts the running pods: same labels, same template, no restart;
//! 3. `status.redis.storage` counts the volumes whose capacity reached the size, with what
//!    the others wait for (the storage driver resizes online, or at the pod's next start
//!    when it reports `FileSystemResizePending`), until all have.
//!
//! The decisions are pure functions of the objects; [`reconcile`](super::reconcile) does
//! the requests.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::StorageStatus;

/// Stalled reason: the StorageClass refuses to expand the volumes.
pub const NOT_EXPANDABLE: &str = "VolumeExpansionRefused";
/// Reconciling reason while volumes are being expanded.
pub const EXPANDING: &str = "ExpandingVolumes";

/// What to do with the Redis StatefulSet, given the live one and the desired one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Apply as usual (no live StatefulSet, or the claim templates ask the same size).
    Apply,
    /// The live StatefulSet is being deleted (by us, orphaning its pods): apply nothing
    /// until it is gone, then create it.
    WaitForDeletion,
    /// The spec asks for larger volumes than the claim template has.
    Grow { from: String, to: String },
    /// The spec asks for smaller volumes (the CRD forbids it; volumes never shrink): keep
    /// the live template.
    Shrink { from: String, to: String },
}

/// Decide from the live StatefulSet (the watch cache) and the desired one.
pub fn plan(live: Option<&StatefulSet>, desired: &StatefulSet) -> Plan {
    let Some(live) = live else {
        return Plan::Apply;
    };
    if live.metadata.deletion_timestamp.is_some() {
        return Plan::WaitForDeletion;
    }
    let (Some(from), Some(to)) = (claim_size(live), claim_size(desired)) else {
        return Plan::Apply;
    };
    match (bytes(from), bytes(to)) {
        (Some(a), Some(b)) if b > a => Plan::Grow { from: from.to_string(), to: to.to_string() },
        (Some(a), Some(b)) if b < a => Plan::Shrink { from: from.to_string(), to: to.to_string() },
        _ => Plan::Apply,
    }
}

/// The storage request of the (first and only) claim template.
pub fn claim_size(sts: &StatefulSet) -> Option<&str> {
    let claim = sts.spec.as_ref()?.volume_claim_templates.as_ref()?.first()?;
    request(claim)
}

/// A claim template that requests `size` and nothing else (what the watch cache keeps
/// of the StatefulSet's).
pub fn claim_of_size(size: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        spec: Some(k8s_openapi::api::core::v1::PersistentVolumeClaimSpec {
            resources: Some(k8s_openapi::api::core::v1::VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity(size.to_string()))].into()),
                limits: None,
            }),
            ..Default::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The storage a PVC (or claim template) requests.
fn request(pvc: &PersistentVolumeClaim) -> Option<&str> {
    Some(pvc.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?.get("storage")?.0.as_str())
}

/// The storage a bound PVC has.
fn capacity(pvc: &PersistentVolumeClaim) -> Option<&str> {
    Some(pvc.status.as_ref()?.capacity.as_ref()?.get("storage")?.0.as_str())
}

/// `desired` with the claim template's size set to `size` (the live one, kept while the
/// volumes cannot grow, so that everything else in the spec is still applied).
pub fn with_claim_size(mut desired: StatefulSet, size: &str) -> StatefulSet {
    let requests = desired
        .spec
        .as_mut()
        .and_then(|s| s.volume_claim_templates.as_mut())
        .and_then(|t| t.first_mut())
        .and_then(|c| c.spec.as_mut())
        .and_then(|s| s.resources.as_mut())
        .and_then(|r| r.requests.as_mut());
    if let Some(requests) = requests {
        requests.insert("storage".to_string(), Quantity(size.to_string()));
    }
    desired
}

/// The PVCs whose request is below `size` (to patch), by name.
pub fn to_expand<'a>(pvcs: &'a [PersistentVolumeClaim], size: &str) -> Vec<&'a str> {
    let Some(want) = bytes(size) else {
        return Vec::new();
    };
    pvcs.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| request(p).and_then(bytes).is_none_or(|r| r < want))
        .filter_map(|p| p.metadata.name.as_deref())
        .collect()
}

/// `status.redis.storage` from the stack's PVCs: how many have reached `size`, and what
/// the others wait for (their resize conditions, else their capacity).
pub fn progress(pvcs: &[PersistentVolumeClaim], size: &str) -> StorageStatus {
    let want = bytes(size);
    let mut resized = 0;
    let mut waiting = Vec::new();
    let mut names: Vec<&PersistentVolumeClaim> = pvcs.iter().collect();
    names.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pvc in &names {
        let name = pvc.metadata.name.as_deref().unwrap_or("?");
        let has = capacity(pvc);
        if want.is_some() && has.and_then(bytes) >= want {
            resized += 1;
            continue;
        }
        let conditions: Vec<String> = pvc
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .filter(|c| c.status == "True")
            .map(|c| match c.message.as_deref().filter(|m| !m.is_empty()) {
                Some(m) => format!("{} ({m})", c.type_),
                None => c.type_.clone(),
            })
            .collect();
        let at = has.unwrap_or("no capacity yet");
        waiting.push(if conditions.is_empty() {
            format!("{name} at {at}")
        } else {
            format!("{name} at {at}: {}", conditions.join(", "))
        });
    }
    let message = if waiting.is_empty() {
        format!("every volume has {size}")
    } else {
        format!("waiting for the storage driver to resize {}", waiting.join("; "))
    };
    StorageStatus { size: size.to_string(), volumes: names.len() as i32, resized, message }
}

/// Bytes of a storage quantity (`1Gi`, `500Mi`, `1.5G`, `2147483648`); `None` when it is
/// not one (the CRD's pattern admits only these forms; a PVC's capacity uses them too).
pub fn bytes(q: &str) -> Option<u128> {
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.len() > 18 {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    let mut out = whole.checked_mul(multiplier)?;
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().ok()?;
        let scale = 10u128.checked_pow(fraction.len() as u32)?;
        out = out.checked_add(digits.checked_mul(multiplier)? / scale)?;
    }
    Some(out)
}

/// The API server's refusal of a PVC expansion (the class does not allow it, or the
/// volume is not dynamically provisioned): a 403/422 with that message, told apart from
/// other failures (which are retried like any request).
pub fn is_expansion_refused(status: u16, message: &str) -> bool {
    matches!(status, 403 | 422)
        && (message.contains("storageclass that provisions the pvc must support resize")
            || message.contains("only dynamically provisioned pvc can be resized")
            || message.contains("field is immutable after creation"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimCondition, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
        VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn sized(size: &str) -> BTreeMap<String, Quantity> {
        BTreeMap::from([("storage".to_string(), Quantity(size.to_string()))])
    }

    fn claim(name: &str, request: &str, capacity: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            spec: Some(PersistentVolumeClaimSpec {
                resources: Some(VolumeResourceRequirements { requests: Some(sized(request)), limits: None }),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: capacity.map(|c| PersistentVolumeClaimStatus {
                capacity: Some(sized(c)),
                ..PersistentVolumeClaimStatus::default()
            }),
        }
    }

    fn sts(size: &str) -> StatefulSet {
        StatefulSet {
            spec: Some(StatefulSetSpec {
                volume_claim_templates: Some(vec![claim("data", size, None)]),
                ..StatefulSetSpec::default()
            }),
            ..StatefulSet::default()
        }
    }

    #[test]
    fn quantities_compare_by_bytes_not_by_spelling() {
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("1024Mi"), bytes("1Gi"));
        assert_eq!(bytes("1073741824"), bytes("1Gi"));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("2G"), Some(2_000_000_000));
        assert_eq!(bytes("500M"), Some(500_000_000));
        for bad in ["", "Gi", "1Qi", "-1Gi", "1.2.3Gi", "1e3"] {
            assert_eq!(bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_larger_size_grows_the_same_size_spelled_otherwise_applies_as_usual() {
        assert_eq!(plan(None, &sts("2Gi")), Plan::Apply);
        assert_eq!(plan(Some(&sts("1Gi")), &sts("1024Mi")), Plan::Apply);
        assert_eq!(plan(Some(&sts("1Gi")), &sts("2Gi")), Plan::Grow { from: "1Gi".into(), to: "2Gi".into() });
        assert_eq!(
            plan(Some(&sts("2Gi")), &sts("1Gi")),
            Plan::Shrink { from: "2Gi".into(), to: "1Gi".into() }
        );
        let mut deleting = sts("1Gi");
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert_eq!(plan(Some(&deleting), &sts("2Gi")), Plan::WaitForDeletion);
    }

    #[test]
    fn keeping_the_live_size_changes_only_the_claim_template() {
        let mut desired = sts("2Gi");
        desired.metadata.name = Some("x".into());
        let kept = with_claim_size(desired.clone(), "1Gi");
        assert_eq!(claim_size(&kept), Some("1Gi"));
        assert_eq!(kept.metadata, desired.metadata);
    }

    #[test]
    fn only_claims_below_the_size_are_patched() {
        let pvcs = [claim("a", "1Gi", Some("1Gi")), claim("b", "2Gi", Some("1Gi")), claim("c", "4Gi", None)];
        assert_eq!(to_expand(&pvcs, "2Gi"), vec!["a"]);
        assert!(to_expand(&pvcs, "1Gi").is_empty());
    }

    #[test]
    fn progress_counts_capacity_and_names_what_the_rest_waits_for() {
        let mut pending = claim("data-x-redis-1", "2Gi", Some("1Gi"));
        pending.status.as_mut().unwrap().conditions = Some(vec![PersistentVolumeClaimCondition {
            type_: "FileSystemResizePending".into(),
            status: "True".into(),
            message: Some("Waiting for user to (re-)start a pod".into()),
            ..PersistentVolumeClaimCondition::default()
        }]);
        let pvcs =
            [claim("data-x-redis-0", "2Gi", Some("2048Mi")), pending, claim("data-x-redis-2", "2Gi", None)];
        let p = progress(&pvcs, "2Gi");
        assert_eq!((p.volumes, p.resized), (3, 1));
        assert!(
            p.message.contains(
                "data-x-redis-1 at 1Gi: FileSystemResizePending (Waiting for user to (re-)start a pod)"
            ),
            "{}",
            p.message
        );
        assert!(p.message.contains("data-x-redis-2 at no capacity yet"), "{}", p.message);
        let done = progress(&[claim("a", "2Gi", Some("2Gi"))], "2Gi");
        assert_eq!((done.volumes, done.resized), (1, 1));
    }

    #[test]
    fn only_the_expansion_refusal_is_taken_for_one() {
        let msg = "persistentvolumeclaims \"data-x-redis-0\" is forbidden: only dynamically provisioned pvc \
                   can be resized and the storageclass that provisions the pvc must support resize";
        assert!(is_expansion_refused(403, msg));
        assert!(!is_expansion_refused(403, "forbidden: User cannot patch resource"));
        assert!(!is_expansion_refused(500, msg));
    }
}
