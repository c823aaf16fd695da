//! The counter web service. (Stub: owned by the web-service work.)

/// Errors of the web service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not implemented yet")]
    NotImplemented,
}

/// `counterstack web` arguments.
#[derive(clap::Args, Debug)]
pub struct WebArgs {}

/// Serve until SIGTERM.
pub async fn run(_args: WebArgs) -> Result<(), Error> {
    Err(Error::NotImplemented)
}
