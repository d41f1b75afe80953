//! `ordo token`: create, list, revoke and generate ordo tokens, straight in
//! the database (admins over HTTP have `/tokens`).

use std::io::Write as _;

use api::auth::tokens::{CreateError, NewToken, Token};
use api::auth::{Scopes, TokenSecret, TokenStore};

use crate::config::TokenAction;

/// Runs one `ordo token` action on `store`.
pub async fn run(store: &TokenStore, action: TokenAction) -> anyhow::Result<()> {
    match action {
        TokenAction::Create {
            scopes,
            user,
            name,
            expires,
        } => {
            let scopes = Scopes::parse(scopes.iter().map(String::as_str))?;
            let new = NewToken {
                name,
                scopes,
                user_id: user,
                expires_in: expires,
                created_by: "system".into(),
            };
            let (token, secret) = match store.create(&new).await {
                Ok(made) => made,
                Err(CreateError::Rule(rule)) => anyhow::bail!("{rule}"),
                Err(CreateError::Store(e)) => return Err(e.into()),
            };
            eprintln!(
                "created token {} ({}); its secret is shown this once:",
                token.id,
                token.scope_words().join(" ")
            );
            println!("{}", secret.expose());
        }
        TokenAction::List { json } => {
            let tokens = store.list().await?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &tokens)?;
                writeln!(out)?;
            } else {
                print_table(&mut out, &tokens)?;
            }
        }
        TokenAction::Revoke { id } => match store.revoke(id).await? {
            Some(token) => println!(
                "revoked token {} at {}",
                token.id,
                token
                    .revoked_at
                    .map(|t| eventstore::envelope::format_time(&t))
                    .unwrap_or_default()
            ),
            None => anyhow::bail!("no token {id}; `ordo token list` shows them"),
        },
        TokenAction::Generate => println!("{}", TokenSecret::generate().expose()),
    }
    Ok(())
}

fn print_table(out: &mut impl std::io::Write, tokens: &[Token]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<36}  {:<20}  {:<30}  {:<36}  {:<20}  {:<20}  revoked",
        "id", "name", "scopes", "user", "created", "expires"
    )?;
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    for token in tokens {
        writeln!(
            out,
            "{:<36}  {:<20}  {:<30}  {:<36}  {:<20}  {:<20}  {}",
            token.id,
            token.name.chars().take(20).collect::<String>(),
            token.scope_words().join(" "),
            token
                .user_id
                .map(|u| u.to_string())
                .unwrap_or_else(|| "-".into()),
            time(Some(token.created_at)),
            time(token.expires_at),
            time(token.revoked_at)
        )?;
    }
    Ok(())
}
