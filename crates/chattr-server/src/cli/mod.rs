//! `chattr chat …`: a terminal client on `chattr-client`. Tokens are kept in a profile
//! file (default `~/.config/chattr/profile.json`, mode 0600) and refreshed when expired.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chattr_api::v1::{codes, AuthResponse, Conversation, ConversationKind, Message, ServerFrame};
use chattr_client::{Client, ClientError, Live, LiveEvent};
use clap::{Args, Subcommand};
use uuid::Uuid;

/// Arguments of `chattr chat`.
#[derive(Args)]
pub struct ChatArgs {
    /// Server URL.
    #[arg(long, env = "CHATTR_SERVER_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub server: String,
    /// Profile file holding the tokens.
    #[arg(long, env = "CHATTR_PROFILE", global = true)]
    pub profile: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: ChatCommand,
}

/// A chat command.
#[derive(Subcommand)]
pub enum ChatCommand {
    /// Create an account (password from --password, CHATTR_PASSWORD, or a line on stdin).
    Signup {
        /// Username: 3–32 of a-z 0-9 _ . -
        username: String,
        /// Password (prefer CHATTR_PASSWORD or stdin: flags show up in process lists).
        #[arg(long, env = "CHATTR_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Sign in.
    Login {
        /// Username.
        username: String,
        /// Password.
        #[arg(long, env = "CHATTR_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Sign out (revokes this session).
    Logout,
    /// Find users by username prefix.
    Users {
        /// Prefix.
        prefix: String,
    },
    /// Open a direct conversation with a user; prints its id.
    Dm {
        /// Username.
        username: String,
    },
    /// Create a group with members; prints its id.
    Group {
        /// Title.
        title: String,
        /// Usernames of the other members.
        members: Vec<String>,
    },
    /// List conversations with unread counts.
    List,
    /// Send a message. CONVERSATION is an id or @username (direct).
    Send {
        /// Conversation id or @username.
        conversation: String,
        /// Text.
        text: Vec<String>,
    },
    /// Show recent history.
    History {
        /// Conversation id or @username.
        conversation: String,
        /// How many messages.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Follow messages live (reconnects and resumes by itself). Ctrl-C to stop.
    Tail,
    /// List this account's sessions.
    Sessions,
    /// Revoke a session by id.
    Revoke {
        /// Session id.
        id: Uuid,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Profile {
    server: String,
    auth: AuthResponse,
}

fn profile_path(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --profile")?;
    Ok(PathBuf::from(home).join(".config/chattr/profile.json"))
}

fn save(path: &Path, server: &str, auth: &AuthResponse) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(&Profile { server: server.to_owned(), auth: auth.clone() })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())?;
    Ok(())
}

fn read_password(given: Option<String>) -> anyhow::Result<String> {
    if let Some(p) = given {
        return Ok(p);
    }
    eprint!("password: ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

impl ChatCommand {
    /// Runs the command against `server`.
    pub async fn run(self, server: &str, profile: Option<&Path>) -> anyhow::Result<()> {
        let path = profile_path(profile)?;
        let client = Client::new(server)?;
        match self {
            ChatCommand::Signup { username, password } => {
                let auth = client.signup(&username, &read_password(password)?).await?;
                save(&path, server, &auth)?;
                println!("signed up as {} ({})", auth.user.username, auth.user.id);
                return Ok(());
            }
            ChatCommand::Login { username, password } => {
                let auth = client.login(&username, &read_password(password)?).await?;
                save(&path, server, &auth)?;
                println!("logged in as {}", auth.user.username);
                return Ok(());
            }
            _ => {}
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| "not signed in: run `chattr chat login <username>`")?;
        let saved: Profile = serde_json::from_str(&text).context("profile file is damaged; log in again")?;
        client.set_auth(saved.auth);
        // Every refresh rotates the refresh token: save each new pair at once, or the next
        // command would present a used token and the server would revoke the session.
        let (save_path, save_server) = (path.clone(), server.to_owned());
        client.on_tokens(std::sync::Arc::new(move |auth| {
            if let Err(e) = save(&save_path, &save_server, auth) {
                eprintln!("warning: cannot save tokens: {e}");
            }
        }));
        // Access tokens are short-lived: refresh up front when the saved one was rejected.
        if let Err(ClientError::Api { code, .. }) = client.sessions().await {
            if code == codes::UNAUTHORIZED {
                client.refresh().await.context("session expired; log in again")?;
            }
        }
        self.run_signed_in(&client, &path).await
    }

    async fn run_signed_in(self, client: &Client, path: &Path) -> anyhow::Result<()> {
        let me = client.me()?;
        match self {
            ChatCommand::Signup { .. } | ChatCommand::Login { .. } => {}
            ChatCommand::Logout => {
                client.logout().await?;
                let _ = std::fs::remove_file(path);
                println!("logged out");
            }
            ChatCommand::Users { prefix } => {
                for u in client.search_users(&prefix).await? {
                    println!("{}\t{}", u.username, u.id);
                }
            }
            ChatCommand::Dm { username } => {
                let conv = client.direct(user_id(client, &username).await?).await?;
                println!("{}", conv.id);
            }
            ChatCommand::Group { title, members } => {
                let mut ids = Vec::new();
                for m in &members {
                    ids.push(user_id(client, m).await?);
                }
                println!("{}", client.group(&title, &ids).await?.id);
            }
            ChatCommand::List => {
                for c in client.conversations().await? {
                    println!("{}\t{}\t{} unread\t{}", c.id, name_of(&c, me.id), c.unread, c.last_seq);
                }
            }
            ChatCommand::Send { conversation, text } => {
                let id = conversation_id(client, &conversation).await?;
                let body = text.join(" ");
                let (m, _) = client.send(id, &Uuid::now_v7().to_string(), &body).await?;
                println!("sent #{}", m.seq);
            }
            ChatCommand::History { conversation, limit } => {
                let id = conversation_id(client, &conversation).await?;
                let conv = client.conversation(id).await?;
                for m in client.history(id, None, None, Some(limit.clamp(1, 100))).await? {
                    print_message(&conv, &m);
                }
            }
            ChatCommand::Tail => tail(client).await?,
            ChatCommand::Sessions => {
                for s in client.sessions().await? {
                    let current = if s.current { " (this one)" } else { "" };
                    println!("{}\t{}\t{}{}", s.id, s.last_seen_at, s.user_agent.unwrap_or_default(), current);
                }
            }
            ChatCommand::Revoke { id } => {
                client.revoke_session(id).await?;
                println!("revoked");
            }
        }
        Ok(())
    }
}

async fn user_id(client: &Client, username: &str) -> anyhow::Result<Uuid> {
    let name = username.trim_start_matches('@');
    let found = client.search_users(name).await?;
    match found.into_iter().find(|u| u.username == name) {
        Some(u) => Ok(u.id),
        None => bail!("no user named {name}"),
    }
}

async fn conversation_id(client: &Client, given: &str) -> anyhow::Result<Uuid> {
    if let Ok(id) = given.parse() {
        return Ok(id);
    }
    if given.starts_with('@') {
        return Ok(client.direct(user_id(client, given).await?).await?.id);
    }
    bail!("{given} is neither a conversation id nor @username")
}

fn name_of(c: &Conversation, me: Uuid) -> String {
    match c.kind {
        ConversationKind::Group => c.title.clone().unwrap_or_default(),
        ConversationKind::Direct => {
            c.members.iter().find(|m| m.id != me).map(|m| format!("@{}", m.username)).unwrap_or_default()
        }
    }
}

fn print_message(conv: &Conversation, m: &Message) {
    let who = conv.members.iter().find(|u| u.id == m.sender_id).map(|u| u.username.as_str()).unwrap_or("?");
    let body = if m.deleted { "(deleted)" } else { m.body.as_str() };
    println!("[{}] #{} {}: {}", m.created_at.format("%H:%M"), m.seq, who, body);
}

async fn tail(client: &Client) -> anyhow::Result<()> {
    let mut conversations: BTreeMap<Uuid, Conversation> =
        client.conversations().await?.into_iter().map(|c| (c.id, c)).collect();
    let cursors = conversations.iter().map(|(id, c)| (*id, c.last_seq)).collect();
    let mut live = Live::start(client.clone(), cursors).await?;
    eprintln!("following {} conversations; Ctrl-C to stop", conversations.len());
    loop {
        let event = tokio::select! {
            e = live.next() => e,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match event {
            None => return Ok(()),
            Some(LiveEvent::Message(m)) => {
                if !conversations.contains_key(&m.conversation_id) {
                    if let Ok(c) = client.conversation(m.conversation_id).await {
                        conversations.insert(c.id, c);
                    }
                }
                if let Some(c) = conversations.get(&m.conversation_id) {
                    print_message(c, &m);
                }
            }
            Some(LiveEvent::Reconnected) => eprintln!("(reconnected)"),
            Some(LiveEvent::Resync { conversation_id, .. }) => {
                eprintln!("(too far behind in {conversation_id}; see history)")
            }
            Some(LiveEvent::Frame(ServerFrame::Conversation { conversation })) => {
                conversations.insert(conversation.id, conversation);
            }
            Some(LiveEvent::Frame(_)) => {}
            Some(LiveEvent::Closed(reason)) => bail!("connection closed: {reason}"),
        }
    }
}
