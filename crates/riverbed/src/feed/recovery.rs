//! The recovery hook: `POST <url>?after=<ms>&request_id=<id>`, the provider then replays what
//! was published since `after` and sends `snapshot_complete` with the request id.

use anyhow::{Context, Result, bail};
use reqwest::Url;

use super::FeedPlan;

/// Calls the provider's recovery endpoint.
pub struct RecoveryHook {
    client: reqwest::Client,
    url: String,
}

impl RecoveryHook {
    /// A client for `plan`'s recovery URL (TLS through rustls on ring, system roots).
    pub fn new(plan: &FeedPlan) -> Result<RecoveryHook> {
        let client = reqwest::Client::builder()
            .timeout(plan.request_timeout)
            .build()
            .context("building the recovery HTTP client")?;
        Ok(RecoveryHook {
            client,
            url: plan.recovery_url.clone(),
        })
    }

    /// The request's URL, credentials hidden: for logs.
    pub fn describe(&self, producer: &str) -> String {
        riverbed_core::redact::urls_in(&self.url.replace("{producer}", producer))
    }

    /// Asks for a replay of `producer` from `after` (everything without it).
    pub async fn request(&self, producer: &str, after: Option<u64>, request_id: u64) -> Result<()> {
        let mut url =
            Url::parse(&self.url.replace("{producer}", producer)).context("the recovery URL")?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(a) = after {
                q.append_pair("after", &a.to_string());
            }
            q.append_pair("request_id", &request_id.to_string());
        }
        let response = self
            .client
            .post(url)
            .send()
            .await
            // The error quotes the URL, which may hold credentials.
            .map_err(|e| anyhow::anyhow!(riverbed_core::redact::urls_in(&e.to_string())))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            bail!("the recovery endpoint answered {status}: {body}");
        }
        Ok(())
    }
}
