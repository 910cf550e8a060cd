//! Where and as whom to reach S3, resolved from the environment and the shared AWS files the
//! way the AWS CLI and SDKs resolve it.
//!
//! Nothing here reads the process environment: [`resolve`] takes a lookup function for the
//! variables and the home directory, so the caller (and the tests) decide what they are.
//! Empty variables and empty file values count as unset.
//!
//! The precedence is the one documented for the AWS CLI:
//!
//! - credentials: `AWS_ACCESS_KEY_ID` with `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`);
//!   then the profile (`AWS_PROFILE`, else `default`), where an assumed role, a web identity
//!   or IAM Identity Center (`role_arn`, `web_identity_token_file`, `sso_*`) comes first and is
//!   refused, then static keys in the shared credentials file, then a `credential_process`
//!   (refused), then static keys in the config file. Refused kinds need the AWS tools to fetch
//!   temporary keys, which the operator can export instead.
//! - region: `AWS_REGION`, then `AWS_DEFAULT_REGION`, then the profile's `region`.
//! - endpoint: none at all when `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` (else the profile's
//!   `ignore_configured_endpoint_urls`) is true; otherwise `AWS_ENDPOINT_URL_S3`, then
//!   `AWS_ENDPOINT_URL`, then `s3.endpoint_url` of the `[services name]` section the profile
//!   names with `services = name`, then the profile's nested `s3 =` / `endpoint_url = ...`,
//!   then the profile's `endpoint_url`.
//!
//! A profile's settings are those of its section in the credentials file (`[name]`) over those
//! of its section in the config file (`[profile name]`, or `[default]`), as the SDKs merge them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The profile used when `AWS_PROFILE` is unset.
const DEFAULT_PROFILE: &str = "default";

/// What separates words on a line of a shared AWS file.
const WHITESPACE: &[char] = &[' ', '\t'];

/// What starts a comment in a shared AWS file.
const COMMENT: &[char] = &['#', ';'];

/// Where and as whom to reach S3, as the AWS tools resolve it.
///
/// `Debug` shows whether the secret key and the session token are set, never their values.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct AwsSettings {
    /// The region, if any was configured.
    pub region: Option<String>,
    /// The S3 endpoint URL, if any was configured (else the AWS default for the region).
    pub endpoint: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// The session token of temporary credentials.
    pub session_token: Option<String>,
    /// The profile used (`default` unless `AWS_PROFILE` names another).
    pub profile: String,
    /// Where the credentials came from: `environment`, `profile <name> in <file>`, or `none`.
    pub credentials_from: String,
}

impl fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| Redacted),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| Redacted),
            )
            .field("profile", &self.profile)
            .field("credentials_from", &self.credentials_from)
            .finish()
    }
}

/// Stands for a secret in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Resolves the S3 settings from the variables `env` returns and the shared AWS files (under
/// `home` unless `AWS_SHARED_CREDENTIALS_FILE` or `AWS_CONFIG_FILE` name others).
///
/// # Errors
///
/// A one-line message, naming no secret, when only one of `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY` is set (or only one of the two keys in a profile), when
/// `AWS_PROFILE` names a profile in neither file, when the profile's credentials are of a kind
/// not supported here (a role, web identity, IAM Identity Center or `credential_process`), or
/// when a file exists but cannot be read or parsed.
pub(crate) fn resolve(
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<AwsSettings, String> {
    let var = |name: &str| env(name).filter(|value| !value.is_empty());
    let asked = var("AWS_PROFILE");
    let name = asked.as_deref().unwrap_or(DEFAULT_PROFILE);
    let credentials_file = SharedFile::load(
        &var,
        home,
        "AWS_SHARED_CREDENTIALS_FILE",
        "credentials",
        Kind::Credentials,
    )?;
    let config_file = SharedFile::load(&var, home, "AWS_CONFIG_FILE", "config", Kind::Config)?;
    let profile = Profile {
        name,
        credentials: credentials_file.profiles.get(name),
        config: config_file.profiles.get(name),
    };
    if asked.is_some() && profile.credentials.is_none() && profile.config.is_none() {
        return Err(not_found(name, &[&credentials_file, &config_file]));
    }

    let (keys, credentials_from) = match environment_keys(&var)? {
        Some(keys) => (Some(keys), "environment".to_owned()),
        None => match profile_keys(&var, &profile, &credentials_file, &config_file)? {
            Some((keys, from)) => (Some(keys), from),
            None => (None, "none".to_owned()),
        },
    };
    let (access_key_id, secret_access_key, session_token) = match keys {
        Some(keys) => (Some(keys.id), Some(keys.secret), keys.token),
        None => (None, None, None),
    };
    let region = var("AWS_REGION")
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .or_else(|| profile.get("region").map(str::to_owned));
    let endpoint = endpoint(&var, &profile, &config_file);
    Ok(AwsSettings {
        region,
        endpoint,
        access_key_id,
        secret_access_key,
        session_token,
        profile: name.to_owned(),
        credentials_from,
    })
}

/// A set of static credentials.
struct Keys {
    id: String,
    secret: String,
    token: Option<String>,
}

/// The keys in `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, if both are set.
fn environment_keys(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Keys>, String> {
    const ID: &str = "AWS_ACCESS_KEY_ID";
    const SECRET: &str = "AWS_SECRET_ACCESS_KEY";
    match (var(ID), var(SECRET)) {
        (Some(id), Some(secret)) => Ok(Some(Keys {
            id,
            secret,
            token: var("AWS_SESSION_TOKEN").or_else(|| var("AWS_SECURITY_TOKEN")),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(partial_environment(ID, SECRET)),
        (None, Some(_)) => Err(partial_environment(SECRET, ID)),
    }
}

fn partial_environment(set: &str, unset: &str) -> String {
    format!(
        "{set} is set but {unset} is not; set both (or neither, to use the AWS profile's credentials)"
    )
}

/// The profile's static keys and where they came from, in the AWS CLI's order, or an error
/// when the AWS CLI would fetch temporary credentials instead.
fn profile_keys(
    var: &dyn Fn(&str) -> Option<String>,
    profile: &Profile<'_>,
    credentials_file: &SharedFile,
    config_file: &SharedFile,
) -> Result<Option<(Keys, String)>, String> {
    let name = profile.name;
    if profile.get("role_arn").is_some() {
        return Err(unsupported(
            name,
            if profile.get("web_identity_token_file").is_some() {
                "a web identity role (role_arn with web_identity_token_file)"
            } else {
                "an assumed role (role_arn)"
            },
        ));
    }
    if profile.get("web_identity_token_file").is_some() {
        return Err(unsupported(
            name,
            "a web identity token (web_identity_token_file)",
        ));
    }
    if var("AWS_ROLE_ARN").is_some() && var("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
        return Err(
            "AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE ask for web identity credentials, which \
             are not supported here; export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
             AWS_SESSION_TOKEN) instead, for example with \
             eval \"$(aws configure export-credentials --format env)\""
                .to_owned(),
        );
    }
    if profile.any_key(|key| key.starts_with("sso_")) {
        return Err(unsupported(name, "IAM Identity Center (sso_* settings)"));
    }
    if let Some(keys) = section_keys(profile.credentials, name, credentials_file)? {
        return Ok(Some((keys, credentials_file.source(name))));
    }
    if profile.get("credential_process").is_some() {
        return Err(unsupported(name, "credential_process"));
    }
    if let Some(keys) = section_keys(profile.config, name, config_file)? {
        return Ok(Some((keys, config_file.source(name))));
    }
    Ok(None)
}

/// The static keys of the profile's section in `file`, if it has both.
fn section_keys(
    section: Option<&Section>,
    name: &str,
    file: &SharedFile,
) -> Result<Option<Keys>, String> {
    const ID: &str = "aws_access_key_id";
    const SECRET: &str = "aws_secret_access_key";
    let Some(section) = section else {
        return Ok(None);
    };
    let get = |key: &str| section.get(key).filter(|value| !value.is_empty()).cloned();
    let (set, unset) = match (get(ID), get(SECRET)) {
        (Some(id), Some(secret)) => {
            return Ok(Some(Keys {
                id,
                secret,
                token: get("aws_session_token").or_else(|| get("aws_security_token")),
            }))
        }
        (None, None) => return Ok(None),
        (Some(_), None) => (ID, SECRET),
        (None, Some(_)) => (SECRET, ID),
    };
    Err(format!(
        "{} sets {set} but not {unset}; set both",
        file.source(name)
    ))
}

fn unsupported(profile: &str, kind: &str) -> String {
    format!(
        "profile {profile} gets its credentials from {kind}, which is not supported here; export \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) instead, for example \
         with eval \"$(aws configure export-credentials --profile {profile} --format env)\""
    )
}

fn not_found(profile: &str, files: &[&SharedFile]) -> String {
    let places: Vec<String> = files.iter().filter_map(|file| file.describe()).collect();
    if places.is_empty() {
        format!(
            "profile {profile} not found: the home directory is unknown and neither \
             AWS_SHARED_CREDENTIALS_FILE nor AWS_CONFIG_FILE is set"
        )
    } else {
        format!("profile {profile} not found in {}", places.join(" or "))
    }
}

/// The S3 endpoint, in the AWS CLI's order.
fn endpoint(
    var: &dyn Fn(&str) -> Option<String>,
    profile: &Profile<'_>,
    config_file: &SharedFile,
) -> Option<String> {
    let is_true = |value: &str| value.trim().eq_ignore_ascii_case("true");
    let ignore = var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").map_or_else(
        || {
            profile
                .get("ignore_configured_endpoint_urls")
                .is_some_and(is_true)
        },
        |value| is_true(&value),
    );
    if ignore {
        return None;
    }
    let services = || {
        let section = config_file.services.get(profile.get("services")?)?;
        section
            .get("s3.endpoint_url")
            .filter(|value| !value.is_empty())
            .cloned()
    };
    var("AWS_ENDPOINT_URL_S3")
        .or_else(|| var("AWS_ENDPOINT_URL"))
        .or_else(services)
        .or_else(|| profile.get("s3.endpoint_url").map(str::to_owned))
        .or_else(|| profile.get("endpoint_url").map(str::to_owned))
}

/// The settings of one section; a nested setting `name` under `parent =` is `parent.name`.
type Section = BTreeMap<String, String>;

/// The profile in use, as its sections in the two files define it.
struct Profile<'a> {
    name: &'a str,
    credentials: Option<&'a Section>,
    config: Option<&'a Section>,
}

impl<'a> Profile<'a> {
    /// The non-empty value of `key`, from the credentials file over the config file.
    fn get(&self, key: &str) -> Option<&'a str> {
        [self.credentials, self.config]
            .into_iter()
            .flatten()
            .find_map(|section| section.get(key).filter(|value| !value.is_empty()))
            .map(String::as_str)
    }

    /// Whether a key matching `wanted` has a non-empty value.
    fn any_key(&self, wanted: impl Fn(&str) -> bool) -> bool {
        [self.credentials, self.config]
            .into_iter()
            .flatten()
            .flatten()
            .any(|(key, value)| !value.is_empty() && wanted(key))
    }
}

/// Which of the two shared files, as their section names differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `[name]` sections.
    Credentials,
    /// `[default]`, `[profile name]` and `[services name]` sections.
    Config,
}

/// One of the shared AWS files, as far as it was found.
struct SharedFile {
    /// Where it is looked for; `None` when no variable names it and the home is unknown.
    path: Option<PathBuf>,
    /// Whether it exists.
    found: bool,
    /// Its profiles by name.
    profiles: BTreeMap<String, Section>,
    /// Its `[services name]` sections by name (config file only).
    services: BTreeMap<String, Section>,
}

impl SharedFile {
    /// Reads the file `variable` names, else `~/.aws/<name>`; a missing file is an empty one.
    fn load(
        var: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
        variable: &str,
        name: &str,
        kind: Kind,
    ) -> Result<Self, String> {
        let path = match var(variable) {
            Some(path) => Some(expand_home(&path, home)),
            None => home.map(|home| home.join(".aws").join(name)),
        };
        let mut file = Self {
            path,
            found: false,
            profiles: BTreeMap::new(),
            services: BTreeMap::new(),
        };
        let Some(path) = file.path.as_deref() else {
            return Ok(file);
        };
        // As the AWS CLI does: what is not a readable directory entry is not there.
        if !path.is_file() {
            return Ok(file);
        }
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let sections = parse(&text, path)?;
        file.found = true;
        let mut plain_default = None;
        for (header, settings) in sections {
            let (prefix, rest) = match header.split_once(WHITESPACE) {
                Some((prefix, rest)) => (Some(prefix), rest.trim_matches(WHITESPACE)),
                None => (None, header.as_str()),
            };
            let target = match (kind, prefix) {
                (Kind::Credentials, None) => file.profiles.entry(rest.to_owned()).or_default(),
                (Kind::Config, None) if rest == DEFAULT_PROFILE => {
                    plain_default.get_or_insert_with(Section::new)
                }
                (Kind::Config, Some("profile")) => {
                    file.profiles.entry(rest.to_owned()).or_default()
                }
                (Kind::Config, Some("services")) => {
                    file.services.entry(rest.to_owned()).or_default()
                }
                // Not a profile in this file (`[profile x]` in the credentials file, `[x]` or
                // `[sso-session x]` in the config file): the SDKs ignore these.
                _ => continue,
            };
            target.extend(settings);
        }
        // `[profile default]` takes precedence over `[default]`, as in the SDKs.
        if let Some(settings) = plain_default {
            file.profiles
                .entry(DEFAULT_PROFILE.to_owned())
                .or_insert(settings);
        }
        Ok(file)
    }

    /// Where profile `name` of this file was found, for `credentials_from` and errors.
    fn source(&self, name: &str) -> String {
        match &self.path {
            Some(path) => format!("profile {name} in {}", path.display()),
            None => format!("profile {name}"),
        }
    }

    /// The path looked at, marked when missing.
    fn describe(&self) -> Option<String> {
        let path = self.path.as_deref()?;
        Some(if self.found {
            path.display().to_string()
        } else {
            format!("{} (missing)", path.display())
        })
    }
}

/// `path` with a leading `~` standing for `home`, as the AWS CLI expands it.
fn expand_home(path: &str, home: Option<&Path>) -> PathBuf {
    if let (Some(home), Some(rest)) = (home, path.strip_prefix('~')) {
        if rest.is_empty() {
            return home.to_path_buf();
        }
        if let Some(rest) = rest.strip_prefix(['/', std::path::MAIN_SEPARATOR]) {
            return home.join(rest);
        }
    }
    PathBuf::from(path)
}

/// The sections of a shared AWS file, in order, each with its settings.
///
/// The format is that of the AWS SDKs: `[section]` headers, `name = value` settings with
/// keys in any case, comments from `#` or `;` at the start of a line (or after whitespace
/// within a line; anywhere after a header), lines indented under a setting continuing its
/// value, and lines indented under a setting with an empty value (`s3 =`) defining nested
/// settings.
fn parse(text: &str, path: &Path) -> Result<Vec<(String, Section)>, String> {
    let mut sections: Vec<(String, Section)> = Vec::new();
    // The last setting: its key, its indentation, and whether it opens nested settings.
    let mut last: Option<(String, usize, bool)> = None;
    for (index, line) in text.lines().enumerate() {
        let error =
            |what: &str| format!("cannot parse {} line {}: {what}", path.display(), index + 1);
        let body = line.trim_start_matches(WHITESPACE);
        let indent = line.len() - body.len();
        if body.trim_end_matches(WHITESPACE).is_empty() || body.starts_with(COMMENT) {
            continue;
        }
        if let (Some((key, key_indent, nested)), Some((_, section))) = (&last, sections.last_mut())
        {
            if indent > *key_indent {
                if *nested {
                    let (name, value) = setting(body)
                        .ok_or_else(|| error("expected `name = value` in a nested section"))?;
                    section.insert(format!("{key}.{name}"), value.to_owned());
                } else {
                    let value = section.entry(key.clone()).or_default();
                    value.push('\n');
                    value.push_str(strip_comment(body, true));
                }
                continue;
            }
        }
        if body.starts_with('[') {
            let header = strip_comment(body, false)
                .strip_prefix('[')
                .and_then(|header| header.strip_suffix(']'))
                .ok_or_else(|| error("a section header must end with `]`"))?;
            sections.push((header.trim_matches(WHITESPACE).to_owned(), Section::new()));
            last = None;
            continue;
        }
        let Some((_, section)) = sections.last_mut() else {
            return Err(error("a setting comes before the first [section] header"));
        };
        let (key, value) = setting(body).ok_or_else(|| error("expected `name = value`"))?;
        last = Some((key.clone(), indent, value.is_empty()));
        section.insert(key, value.to_owned());
    }
    Ok(sections)
}

/// The lower-cased name and the value of a `name = value` line.
fn setting(line: &str) -> Option<(String, &str)> {
    let (name, value) = strip_comment(line, true).split_once('=')?;
    let name = name.trim_matches(WHITESPACE);
    if name.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), value.trim_matches(WHITESPACE)))
}

/// `line` without its comment and surrounding whitespace; in settings a comment must follow
/// whitespace, so that values such as `a#b` keep their `#`.
fn strip_comment(line: &str, after_whitespace_only: bool) -> &str {
    let mut previous_is_whitespace = false;
    let mut end = line.len();
    for (index, character) in line.char_indices() {
        if COMMENT.contains(&character) && (previous_is_whitespace || !after_whitespace_only) {
            end = index;
            break;
        }
        previous_is_whitespace = WHITESPACE.contains(&character);
    }
    line[..end].trim_matches(WHITESPACE)
}

#[cfg(test)]
mod tests {
    use super::{resolve, AwsSettings};

    /// A marker every secret in these tests contains, to check that no error shows one.
    const SECRET_MARK: &str = "s3cr3t";

    /// Resolves with `env` (where `{home}` stands for a fresh home directory) and `files`
    /// written under that home; `{home}` stands for it again in paths of the result.
    fn run(env: &[(&str, &str)], files: &[(&str, &str)]) -> Result<AwsSettings, String> {
        let home = tempfile::tempdir().expect("temporary home");
        let root = home.path().display().to_string();
        for (relative, text) in files {
            let path = home.path().join(relative);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dirs");
            std::fs::write(&path, text).expect("write file");
        }
        let vars: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.replace("{home}", &root)))
            .collect();
        let lookup = move |name: &str| {
            vars.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        match resolve(&lookup, Some(home.path())) {
            Ok(mut settings) => {
                settings.credentials_from = settings.credentials_from.replace(&root, "{home}");
                Ok(settings)
            }
            Err(message) => Err(message.replace(&root, "{home}")),
        }
    }

    const CREDENTIALS: &str = ".aws/credentials";
    const CONFIG: &str = ".aws/config";

    const ENV_KEYS: &[(&str, &str)] = &[
        ("AWS_ACCESS_KEY_ID", "AKIAENV"),
        ("AWS_SECRET_ACCESS_KEY", "env-s3cr3t"),
    ];

    const DEFAULT_CREDENTIALS: &str = "[default]\n\
        aws_access_key_id = AKIADEFAULT\n\
        aws_secret_access_key = default-s3cr3t\n\
        aws_session_token = default-token-s3cr3t\n\
        \n\
        [work]\n\
        aws_access_key_id = AKIAWORK\n\
        aws_secret_access_key = work-s3cr3t\n";

    /// Key id, secret, session token, `credentials_from` and profile.
    type Expected = (
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
        &'static str,
    );

    struct CredentialCase {
        name: &'static str,
        env: &'static [(&'static str, &'static str)],
        files: &'static [(&'static str, &'static str)],
        /// The settings wanted, or a part of the error.
        want: Result<Expected, &'static str>,
    }

    const CREDENTIAL_CASES: &[CredentialCase] = &[
        CredentialCase {
            name: "environment only",
            env: ENV_KEYS,
            files: &[],
            want: Ok((
                Some("AKIAENV"),
                Some("env-s3cr3t"),
                None,
                "environment",
                "default",
            )),
        },
        CredentialCase {
            name: "environment with a session token",
            env: &[
                ("AWS_ACCESS_KEY_ID", "AKIAENV"),
                ("AWS_SECRET_ACCESS_KEY", "env-s3cr3t"),
                ("AWS_SESSION_TOKEN", "env-token-s3cr3t"),
            ],
            files: &[],
            want: Ok((
                Some("AKIAENV"),
                Some("env-s3cr3t"),
                Some("env-token-s3cr3t"),
                "environment",
                "default",
            )),
        },
        CredentialCase {
            name: "environment over the profile",
            env: &[
                ("AWS_ACCESS_KEY_ID", "AKIAENV"),
                ("AWS_SECRET_ACCESS_KEY", "env-s3cr3t"),
                ("AWS_PROFILE", "work"),
            ],
            files: &[(CREDENTIALS, DEFAULT_CREDENTIALS)],
            want: Ok((
                Some("AKIAENV"),
                Some("env-s3cr3t"),
                None,
                "environment",
                "work",
            )),
        },
        CredentialCase {
            name: "environment over a profile of an unsupported kind",
            env: ENV_KEYS,
            files: &[(CONFIG, "[default]\ncredential_process = /bin/creds\n")],
            want: Ok((
                Some("AKIAENV"),
                Some("env-s3cr3t"),
                None,
                "environment",
                "default",
            )),
        },
        CredentialCase {
            name: "empty variables count as unset",
            env: &[
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_SECRET_ACCESS_KEY", ""),
                ("AWS_PROFILE", ""),
            ],
            files: &[(CREDENTIALS, DEFAULT_CREDENTIALS)],
            want: Ok((
                Some("AKIADEFAULT"),
                Some("default-s3cr3t"),
                Some("default-token-s3cr3t"),
                "profile default in {home}/.aws/credentials",
                "default",
            )),
        },
        CredentialCase {
            name: "default profile from the credentials file",
            env: &[],
            files: &[(CREDENTIALS, DEFAULT_CREDENTIALS)],
            want: Ok((
                Some("AKIADEFAULT"),
                Some("default-s3cr3t"),
                Some("default-token-s3cr3t"),
                "profile default in {home}/.aws/credentials",
                "default",
            )),
        },
        CredentialCase {
            name: "AWS_PROFILE from the credentials file",
            env: &[("AWS_PROFILE", "work")],
            files: &[(CREDENTIALS, DEFAULT_CREDENTIALS)],
            want: Ok((
                Some("AKIAWORK"),
                Some("work-s3cr3t"),
                None,
                "profile work in {home}/.aws/credentials",
                "work",
            )),
        },
        CredentialCase {
            name: "AWS_PROFILE from [profile x] in the config file",
            env: &[("AWS_PROFILE", "dev")],
            files: &[
                (CREDENTIALS, DEFAULT_CREDENTIALS),
                (
                    CONFIG,
                    "[profile dev]\naws_access_key_id = AKIADEV\naws_secret_access_key = dev-s3cr3t\n",
                ),
            ],
            want: Ok((
                Some("AKIADEV"),
                Some("dev-s3cr3t"),
                None,
                "profile dev in {home}/.aws/config",
                "dev",
            )),
        },
        CredentialCase {
            name: "[default] in the config file",
            env: &[],
            files: &[(
                CONFIG,
                "[default]\naws_access_key_id = AKIACFG\naws_secret_access_key = cfg-s3cr3t\n",
            )],
            want: Ok((
                Some("AKIACFG"),
                Some("cfg-s3cr3t"),
                None,
                "profile default in {home}/.aws/config",
                "default",
            )),
        },
        CredentialCase {
            name: "[profile default] over [default] in the config file",
            env: &[],
            files: &[(
                CONFIG,
                "[profile default]\naws_access_key_id = AKIAPREFIXED\n\
                 aws_secret_access_key = p-s3cr3t\n\
                 [default]\naws_access_key_id = AKIAPLAIN\naws_secret_access_key = d-s3cr3t\n",
            )],
            want: Ok((
                Some("AKIAPREFIXED"),
                Some("p-s3cr3t"),
                None,
                "profile default in {home}/.aws/config",
                "default",
            )),
        },
        CredentialCase {
            name: "the credentials file over the config file",
            env: &[("AWS_PROFILE", "work")],
            files: &[
                (CREDENTIALS, DEFAULT_CREDENTIALS),
                (
                    CONFIG,
                    "[profile work]\naws_access_key_id = AKIACFG\naws_secret_access_key = c-s3cr3t\n",
                ),
            ],
            want: Ok((
                Some("AKIAWORK"),
                Some("work-s3cr3t"),
                None,
                "profile work in {home}/.aws/credentials",
                "work",
            )),
        },
        CredentialCase {
            name: "static keys in the credentials file over a credential_process",
            env: &[],
            files: &[
                (CREDENTIALS, DEFAULT_CREDENTIALS),
                (CONFIG, "[default]\ncredential_process = /bin/creds\n"),
            ],
            want: Ok((
                Some("AKIADEFAULT"),
                Some("default-s3cr3t"),
                Some("default-token-s3cr3t"),
                "profile default in {home}/.aws/credentials",
                "default",
            )),
        },
        CredentialCase {
            name: "no credentials and no files",
            env: &[],
            files: &[],
            want: Ok((None, None, None, "none", "default")),
        },
        CredentialCase {
            name: "a profile without keys",
            env: &[],
            files: &[(CONFIG, "[default]\nregion = eu-west-1\n")],
            want: Ok((None, None, None, "none", "default")),
        },
        CredentialCase {
            name: "custom file locations",
            env: &[
                ("AWS_SHARED_CREDENTIALS_FILE", "{home}/etc/creds.ini"),
                ("AWS_CONFIG_FILE", "{home}/etc/config.ini"),
                ("AWS_PROFILE", "ci"),
            ],
            files: &[
                (
                    CREDENTIALS,
                    "[ci]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = w-s3cr3t\n",
                ),
                (
                    "etc/creds.ini",
                    "[ci]\naws_access_key_id = AKIACUSTOM\naws_secret_access_key = c-s3cr3t\n",
                ),
                ("etc/config.ini", "[profile ci]\nregion = ap-south-1\n"),
            ],
            want: Ok((
                Some("AKIACUSTOM"),
                Some("c-s3cr3t"),
                None,
                "profile ci in {home}/etc/creds.ini",
                "ci",
            )),
        },
        CredentialCase {
            name: "a custom config file under ~",
            env: &[("AWS_CONFIG_FILE", "~/cfg"), ("AWS_PROFILE", "tilde")],
            files: &[(
                "cfg",
                "[profile tilde]\naws_access_key_id = AKIATILDE\naws_secret_access_key = t-s3cr3t\n",
            )],
            want: Ok((
                Some("AKIATILDE"),
                Some("t-s3cr3t"),
                None,
                "profile tilde in {home}/cfg",
                "tilde",
            )),
        },
        CredentialCase {
            name: "AWS_PROFILE in neither file",
            env: &[("AWS_PROFILE", "nope")],
            files: &[(CREDENTIALS, DEFAULT_CREDENTIALS), (CONFIG, "[default]\n")],
            want: Err(
                "profile nope not found in {home}/.aws/credentials or {home}/.aws/config",
            ),
        },
        CredentialCase {
            name: "AWS_PROFILE without any file",
            env: &[("AWS_PROFILE", "nope")],
            files: &[],
            want: Err(
                "profile nope not found in {home}/.aws/credentials (missing) or \
                 {home}/.aws/config (missing)",
            ),
        },
        CredentialCase {
            name: "AWS_PROFILE missing even when the keys are in the environment",
            env: &[
                ("AWS_ACCESS_KEY_ID", "AKIAENV"),
                ("AWS_SECRET_ACCESS_KEY", "env-s3cr3t"),
                ("AWS_PROFILE", "nope"),
            ],
            files: &[],
            want: Err("profile nope not found"),
        },
        CredentialCase {
            name: "[profile x] in the credentials file is not profile x",
            env: &[("AWS_PROFILE", "x")],
            files: &[(
                CREDENTIALS,
                "[profile x]\naws_access_key_id = AKIAX\naws_secret_access_key = x-s3cr3t\n",
            )],
            want: Err("profile x not found"),
        },
        CredentialCase {
            name: "[x] in the config file is not profile x",
            env: &[("AWS_PROFILE", "x")],
            files: &[(
                CONFIG,
                "[x]\naws_access_key_id = AKIAX\naws_secret_access_key = x-s3cr3t\n",
            )],
            want: Err("profile x not found"),
        },
        CredentialCase {
            name: "only the key id in the environment",
            env: &[("AWS_ACCESS_KEY_ID", "AKIAENV")],
            files: &[(CREDENTIALS, DEFAULT_CREDENTIALS)],
            want: Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"),
        },
        CredentialCase {
            name: "only the secret in the environment",
            env: &[("AWS_SECRET_ACCESS_KEY", "env-s3cr3t")],
            files: &[],
            want: Err("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"),
        },
        CredentialCase {
            name: "only the key id in a profile",
            env: &[],
            files: &[(CREDENTIALS, "[default]\naws_access_key_id = AKIAHALF\n")],
            want: Err(
                "profile default in {home}/.aws/credentials sets aws_access_key_id but not \
                 aws_secret_access_key",
            ),
        },
        CredentialCase {
            name: "credential_process",
            env: &[("AWS_PROFILE", "proc")],
            files: &[(CONFIG, "[profile proc]\ncredential_process = /bin/creds --json\n")],
            want: Err(
                "profile proc gets its credentials from credential_process, which is not \
                 supported here; export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
                 AWS_SESSION_TOKEN) instead, for example with \
                 eval \"$(aws configure export-credentials --profile proc --format env)\"",
            ),
        },
        CredentialCase {
            name: "IAM Identity Center with a session",
            env: &[],
            files: &[(
                CONFIG,
                "[default]\nsso_session = corp\nsso_account_id = 111122223333\n\
                 sso_role_name = Admin\n[sso-session corp]\nsso_region = us-east-1\n",
            )],
            want: Err("profile default gets its credentials from IAM Identity Center"),
        },
        CredentialCase {
            name: "IAM Identity Center, legacy settings",
            env: &[],
            files: &[(
                CONFIG,
                "[default]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = us-east-1\n",
            )],
            want: Err("IAM Identity Center (sso_* settings), which is not supported"),
        },
        CredentialCase {
            name: "an assumed role, even with static keys (the AWS CLI would assume the role)",
            env: &[("AWS_PROFILE", "admin")],
            files: &[
                (CREDENTIALS, DEFAULT_CREDENTIALS),
                (
                    CONFIG,
                    "[profile admin]\nrole_arn = arn:aws:iam::111122223333:role/Admin\n\
                     source_profile = default\n\
                     aws_access_key_id = AKIAADMIN\naws_secret_access_key = a-s3cr3t\n",
                ),
            ],
            want: Err("profile admin gets its credentials from an assumed role (role_arn)"),
        },
        CredentialCase {
            name: "a web identity role in the profile",
            env: &[],
            files: &[(
                CONFIG,
                "[default]\nrole_arn = arn:aws:iam::111122223333:role/Pod\n\
                 web_identity_token_file = /var/run/token\n",
            )],
            want: Err("a web identity role (role_arn with web_identity_token_file)"),
        },
        CredentialCase {
            name: "a web identity token file alone",
            env: &[],
            files: &[(CONFIG, "[default]\nweb_identity_token_file = /var/run/token\n")],
            want: Err("a web identity token (web_identity_token_file)"),
        },
        CredentialCase {
            name: "a web identity role in the environment, over profile keys",
            env: &[
                ("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/Pod"),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ],
            files: &[(CREDENTIALS, DEFAULT_CREDENTIALS)],
            want: Err("AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE ask for web identity"),
        },
        CredentialCase {
            name: "a malformed file",
            env: &[],
            files: &[(CONFIG, "[default]\nregion us-east-1\n")],
            want: Err("cannot parse {home}/.aws/config line 2: expected `name = value`"),
        },
        CredentialCase {
            name: "an unterminated section header",
            env: &[],
            files: &[(CREDENTIALS, "# keys\n[default\n")],
            want: Err(
                "cannot parse {home}/.aws/credentials line 2: a section header must end with `]`",
            ),
        },
        CredentialCase {
            name: "a setting before any section",
            env: &[],
            files: &[(CREDENTIALS, "aws_access_key_id = AKIA\n")],
            want: Err("line 1: a setting comes before the first [section] header"),
        },
    ];

    #[test]
    fn credentials() {
        for case in CREDENTIAL_CASES {
            let got = run(case.env, case.files);
            match (&case.want, got) {
                (Ok((id, secret, token, from, profile)), Ok(settings)) => {
                    let got = (
                        settings.access_key_id.as_deref(),
                        settings.secret_access_key.as_deref(),
                        settings.session_token.as_deref(),
                        settings.credentials_from.as_str(),
                        settings.profile.as_str(),
                    );
                    assert_eq!(
                        got,
                        (*id, *secret, *token, *from, *profile),
                        "{}",
                        case.name
                    );
                }
                (Err(part), Err(message)) => {
                    assert!(
                        message.contains(part),
                        "{}: {message:?} lacks {part:?}",
                        case.name
                    );
                    assert!(!message.contains('\n'), "{}: {message:?}", case.name);
                    assert!(!message.contains(SECRET_MARK), "{}: {message:?}", case.name);
                }
                (want, got) => panic!("{}: wanted {want:?}, got {got:?}", case.name),
            }
        }
    }

    struct SettingCase {
        name: &'static str,
        env: &'static [(&'static str, &'static str)],
        files: &'static [(&'static str, &'static str)],
        want: Option<&'static str>,
    }

    const REGION_CASES: &[SettingCase] = &[
        SettingCase {
            name: "AWS_REGION first",
            env: &[
                ("AWS_REGION", "eu-west-1"),
                ("AWS_DEFAULT_REGION", "us-west-2"),
            ],
            files: &[(CONFIG, "[default]\nregion = ap-south-1\n")],
            want: Some("eu-west-1"),
        },
        SettingCase {
            name: "then AWS_DEFAULT_REGION",
            env: &[("AWS_DEFAULT_REGION", "us-west-2")],
            files: &[(CONFIG, "[default]\nregion = ap-south-1\n")],
            want: Some("us-west-2"),
        },
        SettingCase {
            name: "an empty AWS_REGION is unset",
            env: &[("AWS_REGION", ""), ("AWS_DEFAULT_REGION", "us-west-2")],
            files: &[],
            want: Some("us-west-2"),
        },
        SettingCase {
            name: "then the profile in the config file",
            env: &[],
            files: &[(CONFIG, "[default]\nregion = ap-south-1\n")],
            want: Some("ap-south-1"),
        },
        SettingCase {
            name: "of the profile in use",
            env: &[("AWS_PROFILE", "eu")],
            files: &[(
                CONFIG,
                "[default]\nregion = ap-south-1\n[profile eu]\nregion = eu-central-1\n",
            )],
            want: Some("eu-central-1"),
        },
        SettingCase {
            name: "an empty region in the profile is unset",
            env: &[],
            files: &[(CONFIG, "[default]\nregion =\n")],
            want: None,
        },
        SettingCase {
            name: "none",
            env: ENV_KEYS,
            files: &[],
            want: None,
        },
    ];

    const ENDPOINT_CASES: &[SettingCase] = &[
        SettingCase {
            name: "AWS_ENDPOINT_URL_S3 first",
            env: &[
                ("AWS_ENDPOINT_URL_S3", "http://s3.local:9000"),
                ("AWS_ENDPOINT_URL", "http://all.local"),
            ],
            files: &[(CONFIG, "[default]\nendpoint_url = http://profile.local\n")],
            want: Some("http://s3.local:9000"),
        },
        SettingCase {
            name: "then AWS_ENDPOINT_URL",
            env: &[("AWS_ENDPOINT_URL_S3", ""), ("AWS_ENDPOINT_URL", "http://all.local")],
            files: &[(
                CONFIG,
                "[default]\nendpoint_url = http://profile.local\ns3 =\n  endpoint_url = http://nested.local\n",
            )],
            want: Some("http://all.local"),
        },
        SettingCase {
            name: "then the services section the profile names",
            env: &[],
            files: &[(
                CONFIG,
                "[default]\nservices = local\nendpoint_url = http://profile.local\n\
                 s3 =\n  endpoint_url = http://nested.local\n\
                 [services local]\ns3 =\n  endpoint_url = http://services.local\n\
                 [services other]\ns3 =\n  endpoint_url = http://other.local\n",
            )],
            want: Some("http://services.local"),
        },
        SettingCase {
            name: "then the profile's nested s3 section",
            env: &[],
            files: &[(
                CONFIG,
                "[default]\nendpoint_url = http://profile.local\n\
                 s3 =\n    addressing_style = path\n    endpoint_url = http://nested.local\n\
                 region = us-east-1\n",
            )],
            want: Some("http://nested.local"),
        },
        SettingCase {
            name: "then the profile's endpoint_url",
            env: &[],
            files: &[(CONFIG, "[default]\nendpoint_url = http://profile.local\n")],
            want: Some("http://profile.local"),
        },
        SettingCase {
            name: "a nested endpoint of another service is not for S3",
            env: &[],
            files: &[(
                CONFIG,
                "[default]\ndynamodb =\n  endpoint_url = http://dynamo.local\n",
            )],
            want: None,
        },
        SettingCase {
            name: "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
            env: &[
                ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
                ("AWS_ENDPOINT_URL_S3", "http://s3.local:9000"),
            ],
            files: &[(CONFIG, "[default]\nendpoint_url = http://profile.local\n")],
            want: None,
        },
        SettingCase {
            name: "ignore_configured_endpoint_urls in the profile",
            env: &[("AWS_ENDPOINT_URL", "http://all.local")],
            files: &[(
                CONFIG,
                "[default]\nignore_configured_endpoint_urls = TRUE\nendpoint_url = http://p.local\n",
            )],
            want: None,
        },
        SettingCase {
            name: "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=false over the profile",
            env: &[("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "false")],
            files: &[(
                CONFIG,
                "[default]\nignore_configured_endpoint_urls = true\nendpoint_url = http://p.local\n",
            )],
            want: Some("http://p.local"),
        },
        SettingCase {
            name: "none",
            env: &[],
            files: &[],
            want: None,
        },
    ];

    #[test]
    fn region_precedence() {
        for case in REGION_CASES {
            let settings =
                run(case.env, case.files).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(settings.region.as_deref(), case.want, "{}", case.name);
        }
    }

    #[test]
    fn endpoint_precedence() {
        for case in ENDPOINT_CASES {
            let settings =
                run(case.env, case.files).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(settings.endpoint.as_deref(), case.want, "{}", case.name);
        }
    }

    #[test]
    fn comments_and_whitespace() {
        let config = "# a comment\n\
            ; another comment\n\
            \n\
            [ profile   spaced ]   # a comment after the header\n\
            \tAWS_Access_Key_ID=AKIASPACED\n\
            \taws_secret_access_key   =   spaced-s3cr3t   ; a comment\n\
            \t  # an indented comment\n\
            region = us-east-2 # trailing\n\
            endpoint_url = http://host/a#b\n\
            \n\
            [profile other]\n\
            region = eu-north-1\n";
        let settings = run(
            &[("AWS_PROFILE", "spaced")],
            &[(CONFIG, &config.replace('\n', "\r\n"))],
        )
        .expect("resolves");
        assert_eq!(settings.access_key_id.as_deref(), Some("AKIASPACED"));
        assert_eq!(settings.secret_access_key.as_deref(), Some("spaced-s3cr3t"));
        assert_eq!(settings.region.as_deref(), Some("us-east-2"));
        assert_eq!(settings.endpoint.as_deref(), Some("http://host/a#b"));
    }

    #[test]
    fn nested_section_with_comments() {
        let config = "[default]\n\
            s3 =   ; nested settings follow\n\
            \x20 # a comment in the nested section\n\
            \x20 max_concurrent_requests = 20\n\
            \x20 endpoint_url = http://minio.local:9000  # local MinIO\n\
            region = us-east-1\n";
        let settings = run(&[], &[(CONFIG, config)]).expect("resolves");
        assert_eq!(
            settings.endpoint.as_deref(),
            Some("http://minio.local:9000")
        );
        assert_eq!(settings.region.as_deref(), Some("us-east-1"));
    }

    #[test]
    fn malformed_nested_section() {
        let error = run(&[], &[(CONFIG, "[default]\ns3 =\n  endpoint_url\n")])
            .expect_err("a nested line without `=`");
        assert_eq!(
            error,
            "cannot parse {home}/.aws/config line 3: expected `name = value` in a nested section"
        );
    }

    #[test]
    fn without_a_home() {
        let env = |name: &str| {
            ENV_KEYS
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        };
        let settings = resolve(&env, None).expect("environment keys need no home");
        assert_eq!(settings.credentials_from, "environment");

        let asked = |name: &str| (name == "AWS_PROFILE").then(|| "work".to_owned());
        assert_eq!(
            resolve(&asked, None).expect_err("no file to find it in"),
            "profile work not found: the home directory is unknown and neither \
             AWS_SHARED_CREDENTIALS_FILE nor AWS_CONFIG_FILE is set"
        );

        let nothing = |_: &str| None;
        let settings = resolve(&nothing, None).expect("nothing asked, nothing found");
        assert_eq!(
            settings,
            AwsSettings {
                profile: "default".to_owned(),
                credentials_from: "none".to_owned(),
                ..AwsSettings::default()
            }
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let settings = AwsSettings {
            region: Some("eu-west-1".to_owned()),
            endpoint: Some("http://s3.local".to_owned()),
            access_key_id: Some("AKIAVISIBLE".to_owned()),
            secret_access_key: Some("very-s3cr3t".to_owned()),
            session_token: Some("token-s3cr3t".to_owned()),
            profile: "default".to_owned(),
            credentials_from: "environment".to_owned(),
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains(SECRET_MARK), "{shown}");
        assert!(shown.contains("AKIAVISIBLE"), "{shown}");
        assert!(
            shown.contains("secret_access_key: Some(<redacted>)"),
            "{shown}"
        );
        assert!(shown.contains("session_token: Some(<redacted>)"), "{shown}");
        let pretty = format!("{settings:#?}");
        assert!(!pretty.contains(SECRET_MARK), "{pretty}");

        let empty = format!("{:?}", AwsSettings::default());
        assert!(empty.contains("secret_access_key: None"), "{empty}");
    }
}
