//! Who the winning credentials are: STS GetCallerIdentity (aws-sdk-sts), honouring the usual
//! endpoint configuration (`AWS_ENDPOINT_URL_STS`, region, profiles).

use aws_config::BehaviorVersion;
use aws_config::meta::region::ProvideRegion;
use aws_credential_types::Credentials;
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub arn: String,
    pub account: String,
    pub user_id: String,
}

pub async fn get_caller_identity(creds: Credentials) -> Result<Identity, String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).credentials_provider(creds);
    // STS has a global endpoint; without a configured region use its home region.
    if aws_config::default_provider::region::default_provider()
        .region()
        .await
        .is_none()
    {
        loader = loader.region(aws_config::Region::new("us-east-1"));
    }
    let config = loader.load().await;
    let out = aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| DisplayErrorContext(&e).to_string())?;
    Ok(Identity {
        arn: out.arn().unwrap_or_default().to_string(),
        account: out.account().unwrap_or_default().to_string(),
        user_id: out.user_id().unwrap_or_default().to_string(),
    })
}
