//! A repository in an S3 bucket (or an S3-compatible store), through `object_store`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

use crate::{check_key, check_prefix, Backend, Entry, Error, Result, Written};

/// Where and as whom to reach a bucket. The caller resolves it (from the AWS variables and
/// profiles, say); this crate never reads the environment.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The folder inside it, without slashes at either end (empty: the bucket's root).
    pub prefix: String,
    /// The region (`us-east-1` when unset).
    pub region: Option<String>,
    /// The endpoint of an S3-compatible store (`http://` allowed), or none for AWS.
    pub endpoint: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Retries of a failed request (503 `SlowDown`, 500, dropped connections) before giving up.
    pub max_retries: usize,
    /// Longest time a request is retried for.
    pub retry_timeout: Duration,
    /// Requests in flight at once (each holds at most one chunk).
    pub parallelism: usize,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// A bucket and prefix, with the default retries (8 within 60 s) and 16 requests in flight.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: prefix.into().trim_matches('/').to_string(),
            max_retries: 8,
            retry_timeout: Duration::from_secs(60),
            parallelism: 16,
            ..Self::default()
        }
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// The request counters of one backend.
#[derive(Debug, Default)]
struct Counters {
    get: AtomicU64,
    put: AtomicU64,
    head: AtomicU64,
    delete: AtomicU64,
    list: AtomicU64,
}

/// A repository under a bucket's prefix. Each call blocks the calling thread on its own
/// request; many threads may call at once.
pub struct S3Backend {
    config: S3Config,
    store: Arc<AmazonS3>,
    runtime: tokio::runtime::Runtime,
    counters: Counters,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl S3Backend {
    /// Connects (lazily: no request is made here).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the settings do not describe a store.
    pub fn new(config: S3Config) -> Result<Self> {
        if config.bucket.is_empty() {
            return Err(Error::Config("no bucket named".into()));
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(config.region.clone().unwrap_or_else(|| "us-east-1".into()))
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: config.max_retries,
                retry_timeout: config.retry_timeout,
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120))
                    .with_allow_http(true),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
                if let Some(token) = &config.session_token {
                    builder = builder.with_token(token);
                }
            }
            // No credentials: anonymous requests (a public bucket), never a request to an
            // instance-metadata service.
            _ => builder = builder.with_skip_signature(true),
        }
        let store = builder
            .build()
            .map_err(|e| Error::Config(format!("{}: {e}", config.url())))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kyrodb-backup-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the S3 client: {e}")))?;
        Ok(Self {
            config,
            store: Arc::new(store),
            runtime,
            counters: Counters::default(),
        })
    }

    fn object(&self, key: &str) -> Result<ObjectPath> {
        check_key(&self.location(), key)?;
        let full = if self.config.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.config.prefix)
        };
        ObjectPath::parse(&full).map_err(|e| Error::Damaged {
            location: self.location(),
            key: key.to_string(),
            detail: e.to_string(),
        })
    }

    /// The object-store path of a listing prefix (`None`: the bucket's root).
    fn folder(&self, prefix: &str) -> Result<Option<ObjectPath>> {
        check_prefix(&self.location(), prefix)?;
        let inner = prefix.trim_end_matches('/');
        let full = match (self.config.prefix.is_empty(), inner.is_empty()) {
            (true, true) => return Ok(None),
            (true, false) => inner.to_string(),
            (false, true) => self.config.prefix.clone(),
            (false, false) => format!("{}/{inner}", self.config.prefix),
        };
        ObjectPath::parse(full)
            .map(Some)
            .map_err(|e| Error::Config(e.to_string()))
    }

    fn key_of(&self, path: &ObjectPath) -> String {
        let s = path.as_ref();
        if self.config.prefix.is_empty() {
            s.to_string()
        } else {
            s.strip_prefix(&self.config.prefix)
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(s)
                .to_string()
        }
    }

    fn fail(&self, operation: &'static str, key: &str, e: &object_store::Error) -> Error {
        let location = self.location();
        let key = key.to_string();
        let text = e.to_string();
        match e {
            object_store::Error::NotFound { .. } if text.contains("NoSuchBucket") => {
                Error::NoBucket { location }
            }
            object_store::Error::NotFound { .. } => Error::NotFound { location, key },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => Error::Denied {
                location,
                operation,
                key,
                detail: short(&text),
            },
            _ if text.contains("NoSuchBucket") => Error::NoBucket { location },
            _ if text.contains("AccessDenied")
                || text.contains("InvalidAccessKeyId")
                || text.contains("SignatureDoesNotMatch")
                || text.contains("403 Forbidden") =>
            {
                Error::Denied {
                    location,
                    operation,
                    key,
                    detail: short(&text),
                }
            }
            _ => Error::Unavailable {
                location,
                operation,
                key,
                detail: short(&text),
            },
        }
    }
}

/// The last, most specific line of an error chain, kept short for a one-line message.
fn short(text: &str) -> String {
    let one = text.replace('\n', " ");
    if one.len() > 300 {
        let mut cut = 300;
        while !one.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &one[..cut])
    } else {
        one
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.config.url()
    }

    fn read(&self, key: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.object(key)?;
        self.counters.get.fetch_add(1, Ordering::Relaxed);
        self.runtime.block_on(async {
            let got = self
                .store
                .get(&path)
                .await
                .map_err(|e| self.fail("read", key, &e))?;
            if got.meta.size > limit {
                return Err(Error::Damaged {
                    location: self.location(),
                    key: key.to_string(),
                    detail: format!(
                        "{} bytes is too large (more than {limit} allowed)",
                        got.meta.size
                    ),
                });
            }
            let bytes = got.bytes().await.map_err(|e| self.fail("read", key, &e))?;
            Ok(Vec::from(bytes))
        })
    }

    fn read_head(&self, key: &str, len: u64) -> Result<(Vec<u8>, u64)> {
        let path = self.object(key)?;
        self.counters.head.fetch_add(1, Ordering::Relaxed);
        self.runtime.block_on(async {
            let meta = self
                .store
                .head(&path)
                .await
                .map_err(|e| self.fail("read", key, &e))?;
            let end = len.min(meta.size);
            if end == 0 {
                return Ok((Vec::new(), meta.size));
            }
            self.counters.get.fetch_add(1, Ordering::Relaxed);
            let bytes = self
                .store
                .get_range(&path, 0..end)
                .await
                .map_err(|e| self.fail("read", key, &e))?;
            Ok((bytes.to_vec(), meta.size))
        })
    }

    fn write_new(&self, key: &str, bytes: &[u8]) -> Result<Written> {
        self.write_new_owned(key, bytes.to_vec())
    }

    fn write_new_owned(&self, key: &str, bytes: Vec<u8>) -> Result<Written> {
        let path = self.object(key)?;
        self.counters.put.fetch_add(1, Ordering::Relaxed);
        let payload = PutPayload::from(bytes::Bytes::from(bytes));
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .runtime
            .block_on(self.store.put_opts(&path, payload, opts))
        {
            Ok(_) => Ok(Written::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Written::Existed),
            Err(e) => Err(self.fail("write", key, &e)),
        }
    }

    fn write(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.object(key)?;
        self.counters.put.fetch_add(1, Ordering::Relaxed);
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(bytes));
        self.runtime
            .block_on(self.store.put(&path, payload))
            .map(|_| ())
            .map_err(|e| self.fail("write", key, &e))
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.object(key)?;
        self.counters.delete.fetch_add(1, Ordering::Relaxed);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail("delete", key, &e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let full = self.folder(prefix)?;
        self.counters.list.fetch_add(1, Ordering::Relaxed);
        let mut out = self.runtime.block_on(async {
            let mut stream = self.store.list(full.as_ref());
            let mut out = Vec::new();
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(|e| self.fail("list", prefix, &e))?;
                let modified = std::time::UNIX_EPOCH
                    + Duration::from_millis(
                        u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0),
                    );
                out.push(Entry {
                    key: self.key_of(&meta.location),
                    size: meta.size,
                    modified,
                });
            }
            Ok::<_, Error>(out)
        })?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn list_folders(&self, prefix: &str) -> Result<Vec<String>> {
        let full = self.folder(prefix)?;
        self.counters.list.fetch_add(1, Ordering::Relaxed);
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(full.as_ref()))
            .map_err(|e| self.fail("list", prefix, &e))?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn requests(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        vec![
            ("GET", c.get.load(Ordering::Relaxed)),
            ("PUT", c.put.load(Ordering::Relaxed)),
            ("HEAD", c.head.load(Ordering::Relaxed)),
            ("DELETE", c.delete.load(Ordering::Relaxed)),
            ("LIST", c.list.load(Ordering::Relaxed)),
        ]
    }
}
