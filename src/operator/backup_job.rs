//! Backups to a PersistentVolumeClaim (`spec.backup.volume`): the operator cannot mount
//! a user's claim, so each backup is a Job (src/children/backup_job.rs) that streams the
//! snapshot from the chosen replica onto the claim and reports in its termination
//! message (src/backup/job.rs). This module creates the Job, follows it (a GET every
//! few seconds: Jobs are not watched, there is at most one per CounterApp and only
//! while it runs), reads the report and deletes the Job.
//!
//! A Job left running by an operator that stopped is adopted, not doubled; one whose
//! operator never came back is removed by its TTL.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};

use super::Context;
use crate::api::{CounterApp, RetentionSpec, VolumeDestination};
use crate::backup::job::Report;
use crate::backup::keys;
use crate::backup::take::{Done, Failed};
use crate::children::backup_job::{self, CONTAINER, JobSource};
use crate::labels::{self, Component};
use crate::replication::PodView;
use crate::replication::node::NodeAddr;

/// How often a running Job is looked at.
const POLL: Duration = Duration::from_secs(3);
/// A Job whose pod has not started by then fails (unschedulable, claim not mountable,
/// image not pullable), naming what the pod waits for.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// The label the Job controller puts on its pods.
const JOB_NAME_LABEL: &str = "job-name";
/// The reason of every failure of the Job itself (not of the backup it reports).
const JOB_FAILED: &str = "JobFailed";

/// A backup to a volume, prepared by the reconcile, run in the background.
pub struct VolumeWork {
    client: Client,
    app: CounterApp,
    default_web_image: String,
    volume: VolumeDestination,
    retention: RetentionSpec,
    pub source_pod: String,
    ordinal: u32,
    endpoint: NodeAddr,
    namespace: String,
    folder: String,
}

impl VolumeWork {
    /// Check the claim exists (a Job on a missing claim would wait for it forever).
    pub async fn prepare(
        ctx: &Context,
        app: &CounterApp,
        volume: &VolumeDestination,
        retention: &RetentionSpec,
        pod: &PodView,
        endpoint: NodeAddr,
    ) -> Result<Self, Failed> {
        let ns = app.namespace().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        // `list` by name: the operator may list claims (volume expansion) but not get them.
        let lp = ListParams::default().fields(&format!("metadata.name={}", volume.claim_name));
        let found = claims.list_metadata(&lp).await.map_err(|e| {
            Failed::new(
                "ClaimNotFound",
                format!("cannot read PersistentVolumeClaim {ns}/{}: {e}", volume.claim_name),
            )
        })?;
        if found.items.is_empty() {
            return Err(Failed::new(
                "ClaimNotFound",
                format!(
                    "PersistentVolumeClaim {ns}/{} (spec.backup.volume.claimName) does not exist: create it; the operator never creates or deletes backup volumes",
                    volume.claim_name
                ),
            ));
        }
        let name = app.name_any();
        Ok(VolumeWork {
            client: ctx.client.clone(),
            app: app.clone(),
            default_web_image: ctx.default_web_image.clone(),
            volume: volume.clone(),
            retention: retention.clone(),
            source_pod: pod.name.clone(),
            ordinal: pod.ordinal,
            endpoint,
            folder: keys::folder(&volume.prefix, &ns, &name),
            namespace: ns,
        })
    }

    /// Create the Job (or adopt one running), wait for its report, delete it.
    pub async fn run(self, started: Timestamp) -> Result<Done, Failed> {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = match self.adopt(&jobs).await {
            Some(name) => name,
            None => self.create(&jobs, started).await?,
        };
        let result = self.wait(&jobs, &name).await;
        // Background: the Job's pod goes with it.
        if let Err(e) = jobs.delete(&name, &DeleteParams::background()).await {
            tracing::warn!(job = %name, error = %e, "could not delete the finished backup Job; its TTL will");
        }
        result.map(|mut done| {
            // The report leaves the folder out of the listing's keys (4 KiB).
            for r in &mut done.stored {
                if r.key.is_empty() {
                    r.key = keys::key(&self.folder, &r.name);
                }
            }
            done
        })
    }

    /// A backup Job of this CounterApp still running (its operator stopped); finished
    /// ones left behind are deleted.
    async fn adopt(&self, jobs: &Api<Job>) -> Option<String> {
        let app = self.app.name_any();
        let lp = ListParams::default()
            .labels(&labels::selector_string(&labels::selector(&app, Component::Backup)));
        let listed = jobs.list(&lp).await.ok()?;
        let mut running = None;
        for job in listed.items {
            let name = job.name_any();
            if finished(&job).is_some() {
                let _ = jobs.delete(&name, &DeleteParams::background()).await;
            } else if running.as_ref().is_none_or(|r: &String| &name > r) {
                running = Some(name);
            }
        }
        if let Some(name) = &running {
            tracing::info!(job = %name, "a backup Job is running already; following it");
        }
        running
    }

    async fn create(&self, jobs: &Api<Job>, started: Timestamp) -> Result<String, Failed> {
        let source = JobSource {
            pod: &self.source_pod,
            ordinal: self.ordinal,
            host: &self.endpoint.host,
            port: self.endpoint.port,
        };
        let job = backup_job::job(
            &self.app,
            &self.default_web_image,
            &self.volume,
            &self.retention,
            &source,
            started,
        );
        let name = job.name_any();
        jobs.create(&PostParams::default(), &job)
            .await
            .map_err(|e| Failed::new(JOB_FAILED, format!("cannot create the backup Job {name}: {e}")))?;
        tracing::info!(job = %name, "backup Job created");
        Ok(name)
    }

    /// Follow the Job until it reports.
    async fn wait(&self, jobs: &Api<Job>, name: &str) -> Result<Done, Failed> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let began = Instant::now();
        let deadline = Duration::from_secs(backup_job::DEADLINE_SECONDS.unsigned_abs() + 60);
        loop {
            tokio::time::sleep(POLL).await;
            let job = match jobs.get_opt(name).await {
                Ok(Some(j)) => j,
                Ok(None) => {
                    return Err(Failed::new(
                        JOB_FAILED,
                        format!("the backup Job {name} was deleted before it finished"),
                    ));
                }
                // A blip of the API server: look again.
                Err(e) => {
                    tracing::debug!(job = %name, error = %e, "reading the backup Job failed");
                    continue;
                }
            };
            let pod = job_pod(&pods, name).await;
            if let Some(job_condition) = finished(&job) {
                return report(name, pod.as_ref(), &job_condition);
            }
            if began.elapsed() > START_TIMEOUT
                && let Some(waiting) =
                    pod.as_ref().map_or(Some("no pod was created".to_string()), not_started)
            {
                let _ = jobs.delete(name, &DeleteParams::background()).await;
                return Err(Failed::new(
                    JOB_FAILED,
                    format!("the backup Job {name} did not start in {}s: {waiting}", START_TIMEOUT.as_secs()),
                ));
            }
            if began.elapsed() > deadline {
                return Err(Failed::new(JOB_FAILED, format!("the backup Job {name} did not finish in time")));
            }
        }
    }
}

/// The message of a finished Job's Complete or Failed condition (`Some("")` without
/// one), `None` while it runs.
fn finished(job: &Job) -> Option<String> {
    let status = job.status.as_ref()?;
    let done = status.conditions.iter().flatten().find(|c| {
        (c.type_ == "Complete"
            || c.type_ == "Failed"
            || c.type_ == "SuccessCriteriaMet"
            || c.type_ == "FailureTarget")
            && c.status == "True"
    });
    match done {
        Some(c) => Some(format!(
            "{}: {}",
            c.reason.as_deref().unwrap_or(&c.type_),
            c.message.as_deref().unwrap_or("")
        )),
        None if status.succeeded.unwrap_or(0) > 0 || status.failed.unwrap_or(0) > 0 => Some(String::new()),
        None => None,
    }
}

async fn job_pod(pods: &Api<Pod>, job: &str) -> Option<Pod> {
    let lp = ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}"));
    let mut listed = pods.list(&lp).await.ok()?.items;
    listed.sort_by_key(|p| p.metadata.creation_timestamp.clone());
    listed.pop()
}

/// The backup's outcome from the report in the pod's termination message.
fn report(job: &str, pod: Option<&Pod>, job_condition: &str) -> Result<Done, Failed> {
    let message = pod
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone());
    match message.as_deref().map(Report::parse) {
        Some(Ok(result)) => result,
        Some(Err(text)) => Err(Failed::new(JOB_FAILED, format!("the backup Job {job} failed: {text}"))),
        None => Err(Failed::new(
            JOB_FAILED,
            format!(
                "the backup Job {job} ended without a report ({})",
                job_condition.trim_end_matches([' ', ':'])
            ),
        )),
    }
}

/// Why a pod has not started its container yet (None once it runs or ran).
fn not_started(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Pending") {
        return None;
    }
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| c.message.clone().unwrap_or_else(|| "not scheduled".to_string()));
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .map(|w| {
            format!("{}: {}", w.reason.as_deref().unwrap_or("Waiting"), w.message.as_deref().unwrap_or(""))
        })
        .next();
    Some(unscheduled.or(waiting).unwrap_or_else(|| {
        "the pod is pending (is the claim mountable on a node where Redis may run? kubectl describe pod)"
            .to_string()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodCondition,
        PodStatus,
    };

    fn job(cond: Option<(&str, &str)>, succeeded: i32) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: cond.map(|(t, s)| {
                    vec![JobCondition {
                        type_: t.into(),
                        status: s.into(),
                        reason: Some("DeadlineExceeded".into()),
                        message: Some("Job was active longer than specified deadline".into()),
                        ..JobCondition::default()
                    }]
                }),
                succeeded: Some(succeeded),
                ..JobStatus::default()
            }),
            ..Job::default()
        }
    }

    fn pod(phase: &str, container: ContainerState, conditions: Vec<PodCondition>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(conditions),
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(container),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn terminated(message: &str) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                message: Some(message.into()),
                ..Default::default()
            }),
            ..ContainerState::default()
        }
    }

    #[test]
    fn a_job_is_finished_by_its_conditions_or_counts() {
        assert_eq!(finished(&job(None, 0)), None);
        assert_eq!(finished(&job(Some(("Failed", "False")), 0)), None);
        assert_eq!(
            finished(&job(Some(("Failed", "True")), 0)).as_deref(),
            Some("DeadlineExceeded: Job was active longer than specified deadline")
        );
        assert_eq!(finished(&job(None, 1)).as_deref(), Some(""));
    }

    #[test]
    fn the_report_in_the_termination_message_is_the_outcome() {
        let failed = Failed::new("VolumeFull", "the backup volume is full");
        let line = serde_json::to_string(&Report::new(Err(failed.clone()))).unwrap();
        let p = pod("Failed", terminated(&line), vec![]);
        assert_eq!(report("demo-backup-x", Some(&p), ""), Err(failed));
        let p = pod("Failed", terminated("exec /counterstack: exec format error"), vec![]);
        let e = report("demo-backup-x", Some(&p), "").unwrap_err();
        assert_eq!(e.reason, JOB_FAILED);
        assert!(e.message.contains("exec format error"), "{e:?}");
        let e = report("demo-backup-x", None, "DeadlineExceeded: too long").unwrap_err();
        assert!(e.message.contains("without a report (DeadlineExceeded: too long)"), "{e:?}");
    }

    #[test]
    fn a_pod_that_cannot_start_says_why() {
        let unschedulable = PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            message: Some("0/1 nodes are available: persistentvolumeclaim \"backups\" not found".into()),
            ..PodCondition::default()
        };
        let waiting = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ImagePullBackOff".into()),
                message: Some("Back-off pulling image".into()),
            }),
            ..ContainerState::default()
        };
        let p = pod("Pending", waiting.clone(), vec![unschedulable]);
        assert!(not_started(&p).unwrap().contains("persistentvolumeclaim \"backups\" not found"));
        let p = pod("Pending", waiting, vec![]);
        assert_eq!(not_started(&p).as_deref(), Some("ImagePullBackOff: Back-off pulling image"));
        let p = pod("Running", ContainerState::default(), vec![]);
        assert_eq!(not_started(&p), None);
    }
}
