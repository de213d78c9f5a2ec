//! XEP-0133 counts and lists of users: registered, disabled, online, active and idle (see
//! `admin::sessions` for what active and idle mean here). Counts run at once; lists ask for
//! `max_items` first.

use std::sync::Arc;

use async_trait::async_trait;

use super::admin_users::ADMIN;
use super::command::{Command, CommandError, Context, Outcome, Values};
use super::form;
use crate::admin::{accounts, sessions};
use crate::router::Registry;
use crate::xml::forms::{DataForm, FieldType};

pub fn register(registry: &mut Registry) {
    for population in [
        Population::Registered,
        Population::Disabled,
        Population::Online,
        Population::Active,
        Population::Idle,
    ] {
        super::register_command(registry, Arc::new(Count(population)));
        super::register_command(registry, Arc::new(List(population)));
    }
}

#[derive(Clone, Copy)]
enum Population {
    Registered,
    Disabled,
    Online,
    Active,
    Idle,
}

impl Population {
    /// The word XEP-0133 builds node and field names from, and a capitalised one for names.
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Population::Registered => ("registered", "Registered"),
            Population::Disabled => ("disabled", "Disabled"),
            Population::Online => ("online", "Online"),
            Population::Active => ("active", "Active"),
            Population::Idle => ("idle", "Idle"),
        }
    }

    /// Bare JIDs, sorted, of the domains the requester sees.
    async fn members(self, ctx: &Context<'_>) -> Result<Vec<String>, CommandError> {
        let scope = ctx.scope();
        Ok(match self {
            Population::Registered => accounts::registered(ctx.router, &scope).await?,
            Population::Disabled => accounts::disabled(ctx.router, &scope).await?,
            Population::Online | Population::Active | Population::Idle => {
                let online = sessions::online_users(ctx.router, &scope);
                let users: Vec<_> = match self {
                    Population::Online => online.online().collect(),
                    Population::Active => online.active().collect(),
                    _ => online.idle().collect(),
                };
                users.into_iter().map(|u| u.to_string()).collect()
            }
        })
    }
}

/// The XEP-0133 node of a count (`num`) or list command.
fn node(kind: &str, population: Population) -> &'static str {
    let (word, _) = population.words();
    match (kind, word) {
        ("num", "registered") => "http://jabber.org/protocol/admin#get-registered-users-num",
        ("num", "disabled") => "http://jabber.org/protocol/admin#get-disabled-users-num",
        ("num", "online") => "http://jabber.org/protocol/admin#get-online-users-num",
        ("num", "active") => "http://jabber.org/protocol/admin#get-active-users-num",
        ("num", _) => "http://jabber.org/protocol/admin#get-idle-users-num",
        (_, "registered") => "http://jabber.org/protocol/admin#get-registered-users-list",
        (_, "disabled") => "http://jabber.org/protocol/admin#get-disabled-users-list",
        (_, "online") => "http://jabber.org/protocol/admin#get-online-users-list",
        (_, "active") => "http://jabber.org/protocol/admin#get-active-users-list",
        _ => "http://jabber.org/protocol/admin#get-idle-users-list",
    }
}

struct Count(Population);

#[async_trait]
impl Command for Count {
    fn node(&self) -> &'static str {
        node("num", self.0)
    }
    fn name(&self) -> &'static str {
        match self.0 {
            Population::Registered => "Get Number of Registered Users",
            Population::Disabled => "Get Number of Disabled Users",
            Population::Online => "Get Number of Online Users",
            Population::Active => "Get Number of Active Users",
            Population::Idle => "Get Number of Idle Users",
        }
    }
    fn stages(&self) -> usize {
        0
    }
    async fn run(&self, ctx: &Context<'_>, _: &Values) -> Result<Outcome, CommandError> {
        let (word, title) = self.0.words();
        let count = self.0.members(ctx).await?.len();
        Ok(Outcome::form(form::report(
            ADMIN,
            self.name(),
            vec![form::value(
                &format!("{word}usersnum"),
                FieldType::TextSingle,
                &format!("The number of {} users", title.to_lowercase()),
                vec![count.to_string()],
            )],
        )))
    }
}

struct List(Population);

/// The choices XEP-0133 offers for `max_items`.
const MAX_ITEMS: &[&str] = &["25", "50", "75", "100", "150", "200", "none"];

#[async_trait]
impl Command for List {
    fn node(&self) -> &'static str {
        node("list", self.0)
    }
    fn name(&self) -> &'static str {
        match self.0 {
            Population::Registered => "Get List of Registered Users",
            Population::Disabled => "Get List of Disabled Users",
            Population::Online => "Get List of Online Users",
            Population::Active => "Get List of Active Users",
            Population::Idle => "Get List of Idle Users",
        }
    }
    async fn form(&self, _: &Context<'_>, _: usize, _: &Values) -> Result<DataForm, CommandError> {
        Ok(form::ask(
            ADMIN,
            self.name(),
            "",
            vec![form::with_values(
                form::list_single("max_items", "Maximum number of items to show", MAX_ITEMS),
                ["100".to_owned()],
            )],
        ))
    }
    async fn check(&self, _: &Context<'_>, _: usize, values: &Values) -> Result<(), CommandError> {
        max_items(values).map(|_| ())
    }
    async fn run(&self, ctx: &Context<'_>, values: &Values) -> Result<Outcome, CommandError> {
        let limit = max_items(values)?;
        let (word, title) = self.0.words();
        let mut members = self.0.members(ctx).await?;
        if let Some(limit) = limit {
            members.truncate(limit);
        }
        Ok(Outcome::form(form::report(
            ADMIN,
            self.name(),
            vec![form::value(
                &format!("{word}userjids"),
                FieldType::JidMulti,
                &format!("The list of all {} users", title.to_lowercase()),
                members,
            )],
        )))
    }
}

/// `None` for no limit (`none`); 100 when the field was left out.
fn max_items(values: &Values) -> Result<Option<usize>, CommandError> {
    match values.one("max_items") {
        None => Ok(Some(100)),
        Some("none") => Ok(None),
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| {
                CommandError::invalid("max_items", "max_items must be a number or 'none'")
            }),
    }
}
