//! AWS client settings: the default credential chain (environment,
//! profile, web identity, instance role), the configured region, and an
//! endpoint override for emulators.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::config::AwsEndpoint;

/// The SDK configuration of one source or sink. Every call has a deadline
/// (connect 3 s, attempt 10 s, whole call with the SDK's retries 30 s): a
/// request the service never answers must not stall a shard or the sink.
pub async fn sdk_config(endpoint: &AwsEndpoint) -> SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .operation_attempt_timeout(std::time::Duration::from_secs(10))
        .operation_timeout(std::time::Duration::from_secs(30))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(endpoint.aws_region.clone()))
        .timeout_config(timeouts);
    if let Some(url) = &endpoint.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    loader.load().await
}

/// An SDK error in one line: the service's code and message when it
/// answered, else the transport's failure with its causes.
pub fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            match (err.code(), err.message()) {
                (Some(code), Some(msg)) => format!("{code}: {msg}"),
                (Some(code), None) => code.to_owned(),
                _ => DisplayErrorContext(err).to_string(),
            }
        }
        other => DisplayErrorContext(other).to_string(),
    }
}
