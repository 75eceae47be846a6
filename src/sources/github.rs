//! GitHub REST API: `GET /search/commits?q=author-email:{email}` finds the login of whoever authored
//! public commits with that address, then `GET /users/{login}` reads the public profile. A GitHub profile
//! URL (from the query or a hop) goes straight to `/users/{login}`.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::spec::{Deps, SourceConfig, Spec};
use super::{Fetched, Source, SourceError, Upstream};
use crate::domain::{DomainName, Email, Identifier, ProfileUrl, Service};
use crate::profile::{Field, Observation};

pub const SPEC: Spec = Spec {
    name: "github",
    schemes: super::spec::HTTP,
    defaults: || {
        SourceConfig::new("https://api.github.com", 2_500, 30, 0.6).with_key_env("GITHUB_TOKEN")
    },
    build: |c: &SourceConfig, deps: &Deps| {
        let upstream = Upstream::new(deps.http.clone(), &c.base_url)
            .with_header("accept", "application/vnd.github+json")
            .with_header("x-github-api-version", "2022-11-28")
            .with_secret("authorization", "Bearer ", c.api_key.clone());
        Arc::new(Github { upstream })
    },
};

pub struct Github {
    upstream: Upstream,
}

#[derive(Debug, Deserialize)]
struct CommitSearch {
    #[serde(default)]
    items: Vec<CommitItem>,
}

#[derive(Debug, Deserialize)]
struct CommitItem {
    /// The GitHub account linked to the commit; null when the address is not linked to one.
    author: Option<Account>,
}

#[derive(Debug, Deserialize)]
struct Account {
    login: String,
}

#[derive(Debug, Deserialize)]
struct User {
    login: String,
    name: Option<String>,
    company: Option<String>,
    blog: Option<String>,
    location: Option<String>,
    email: Option<String>,
    bio: Option<String>,
    twitter_username: Option<String>,
    avatar_url: Option<String>,
}

impl Source for Github {
    fn name(&self) -> &str {
        SPEC.name
    }

    fn accepts(&self, id: &Identifier) -> bool {
        match id {
            Identifier::Email(_) => true,
            Identifier::Profile(p) => p.service() == Service::Github,
            _ => false,
        }
    }

    fn lookup<'a>(
        &'a self,
        id: &'a Identifier,
    ) -> BoxFuture<'a, Result<Vec<Observation>, SourceError>> {
        async move {
            let login = match id {
                Identifier::Email(email) => match self.login_for(email).await? {
                    Some(login) => login,
                    None => return Ok(Vec::new()),
                },
                Identifier::Profile(p) if p.service() == Service::Github => match p.handle() {
                    Some(h) => h.to_string(),
                    None => return Ok(Vec::new()),
                },
                _ => return Ok(Vec::new()),
            };
            let mut path = String::with_capacity(8 + login.len());
            path.push_str("/users/");
            path.extend(encoded(&login));
            match self.upstream.get_json::<User>(&path).await? {
                Fetched::NotFound => Ok(Vec::new()),
                Fetched::Found(user) => Ok(observations(user)),
            }
        }
        .boxed()
    }
}

impl Github {
    async fn login_for(&self, email: &Email) -> Result<Option<String>, SourceError> {
        let mut path = String::with_capacity(64 + 3 * email.as_str().len());
        path.push_str("/search/commits?q=");
        path.extend(encoded("author-email:"));
        path.extend(encoded(email.as_str()));
        path.push_str("&per_page=5");
        Ok(match self.upstream.get_json::<CommitSearch>(&path).await? {
            Fetched::NotFound => None,
            Fetched::Found(s) => s.items.into_iter().find_map(|i| i.author).map(|a| a.login),
        })
    }
}

/// `s` form-encoded for a path or query, in pieces to append.
fn encoded(s: &str) -> url::form_urlencoded::ByteSerialize<'_> {
    url::form_urlencoded::byte_serialize(s.as_bytes())
}

fn observations(u: User) -> Vec<Observation> {
    let mut out = Vec::with_capacity(10);
    // GitHub links a commit to an account only through an address the account verified.
    out.push(Observation::profile(ProfileUrl::github(&u.login)).verified());
    let mut text = |field, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.trim().is_empty()) {
            out.push(Observation::new(field, v));
        }
    };
    text(Field::FullName, u.name);
    // GitHub's company is free text, often "@org": keep the name without the mention sign.
    text(
        Field::CompanyName,
        u.company
            .map(|c| c.trim().trim_start_matches('@').to_string()),
    );
    text(Field::Location, u.location);
    text(Field::Bio, u.bio);
    text(Field::Photo, u.avatar_url);
    if let Some(blog) = u.blog.filter(|b| !b.trim().is_empty()) {
        match ProfileUrl::parse(&blog) {
            Ok(p) if p.service() != crate::domain::Service::Other => {
                out.push(Observation::profile(p))
            }
            _ => {
                let url = if blog.contains("://") {
                    blog
                } else {
                    format!("https://{blog}")
                };
                if DomainName::parse(&url).is_ok() {
                    out.push(Observation::new(Field::Website, url));
                }
            }
        }
    }
    // A profile's public address must be one the account verified.
    if let Some(e) = u.email.and_then(|e| Email::parse(&e).ok()) {
        out.push(Observation::email(e).verified());
    }
    if let Some(handle) = u.twitter_username.filter(|h| !h.trim().is_empty()) {
        out.push(Observation::profile(ProfileUrl::x(&handle)));
    }
    out
}

/// A user document read as `lookup` reads it (for the fuzz targets).
pub fn parse_answer(body: &[u8]) -> Result<Vec<Observation>, serde_json::Error> {
    serde_json::from_slice::<User>(body).map(observations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_documented_user_fields() {
        let body = r#"{"login":"octocat","id":1,"avatar_url":"https://avatars.githubusercontent.com/u/583231",
            "html_url":"https://github.com/octocat","type":"User","name":"The Octocat","company":"@github",
            "blog":"https://github.blog","location":"San Francisco","email":null,"hireable":null,
            "bio":null,"twitter_username":"octo","public_repos":8,"followers":1,"following":9,
            "created_at":"2011-01-25T18:44:36Z","updated_at":"2024-01-22T12:00:00Z"}"#;
        let u: User = serde_json::from_str(body).expect("documented shape parses");
        let obs = observations(u);
        let has = |f: Field, v: &str| obs.iter().any(|o| o.field == f && o.value == v);
        assert!(has(Field::FullName, "The Octocat"));
        assert!(has(Field::CompanyName, "github"));
        assert!(has(Field::Profile, "https://github.com/octocat"));
        assert!(has(Field::Profile, "https://x.com/octo"));
        assert!(has(Field::Website, "https://github.blog"));
    }

    #[test]
    fn commit_search_without_linked_author_is_a_miss() {
        let body = r#"{"total_count":1,"incomplete_results":false,"items":[{"sha":"abc","commit":
            {"author":{"name":"A","email":"a@example.com","date":"2020-01-01T00:00:00Z"}},"author":null}]}"#;
        let s: CommitSearch = serde_json::from_str(body).expect("documented shape parses");
        assert!(s.items.into_iter().find_map(|i| i.author).is_none());
    }
}
