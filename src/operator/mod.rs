//! The reconcile loop. (Stub: owned by the operator work.)

pub mod rbac;

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not implemented yet")]
    NotImplemented,
}

/// `counterstack operator` arguments.
#[derive(clap::Args, Debug)]
pub struct OperatorArgs {
    /// Web image for CounterApps that set no `spec.web.image`.
    #[arg(long, env = "DEFAULT_WEB_IMAGE", default_value = crate::api::DEFAULT_WEB_IMAGE)]
    pub default_web_image: String,
}

/// Run the operator until SIGTERM.
pub async fn run(_args: OperatorArgs) -> Result<(), Error> {
    Err(Error::NotImplemented)
}
