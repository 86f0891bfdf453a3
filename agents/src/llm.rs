//! The LLM brain: an agent thinking with any OpenAI-compatible chat-completions endpoint
//! (OpenAI, vLLM, Ollama, llama.cpp's server) through `async-openai`, its tools offered as
//! functions.
//!
//! One answer is a loop of streamed turns, bounded three ways: `max_turns` model turns,
//! `max_tokens` written tokens over all turns, and `timeout` of wall time for everything,
//! retries included. A tool call whose arguments do not parse, or that fails, goes back to
//! the model as the tool's result. Requests that time out, or that the endpoint answers
//! with 429 (after its `Retry-After`, seconds or a date) or 5xx, are retried with backoff
//! within the wall time (a wait that would pass it ends the retries at once); when the
//! brain still has no answer it says why ([`LlmError`]) and the caller answers from the
//! offline brain with a note.
//!
//! The API key is a reference resolved for each answer; it goes into the request's header
//! and nowhere else (never a log line, an error or an event).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestSystemMessageContent, ChatCompletionRequestToolMessage,
    ChatCompletionRequestToolMessageContent, ChatCompletionRequestUserMessage,
    ChatCompletionRequestUserMessageContent, ChatCompletionTool, ChatCompletionTools,
    CreateChatCompletionRequest, FunctionCall, FunctionObject,
};
use futures::StreamExt;
use polaris_config::{Env, SecretRef};
use polaris_registry::{AgentSpec, LlmBrain as LlmSpec};
use serde_json::{Value, json};

use crate::tools::kit::{ToolSpec, Toolkit};

/// Retries after the first attempt of one request.
const RETRIES: u32 = 3;
/// First backoff; doubled per retry.
const BACKOFF: Duration = Duration::from_millis(200);
/// Context put into the prompt (recent floor events and memory), in tokens.
pub const CONTEXT_TOKENS: usize = 2000;
/// Rough characters per token, for budgets (no tokenizer is loaded for this).
const CHARS_PER_TOKEN: usize = 4;
/// Longest tool result handed back to the model.
const TOOL_RESULT_CHARS: usize = 6000;
/// Longest part of an endpoint's error body repeated in a note.
const ERROR_CHARS: usize = 200;

/// Why the LLM brain has no answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LlmError(pub String);

/// What a question comes with.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Who asked.
    pub asker: String,
    /// The asking event's whole text.
    pub text: String,
    /// Recent events on the floor, oldest first: (sender, text).
    pub recent: Vec<(String, String)>,
    /// Remembered facts, newest first: (memory id, fact, source event ids).
    pub memory: Vec<(String, String, Vec<String>)>,
}

/// The LLM brain of one agent.
pub struct LlmBrain {
    spec: LlmSpec,
    persona: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for LlmBrain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key, not even its reference.
        f.debug_struct("LlmBrain")
            .field("endpoint", &self.spec.endpoint)
            .field("model", &self.spec.model)
            .finish()
    }
}

impl LlmBrain {
    /// The brain `spec` describes, for `agent`.
    pub fn new(agent: &AgentSpec, spec: &LlmSpec) -> Result<LlmBrain, LlmError> {
        // Err only means a provider is already installed, which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| LlmError(format!("cannot build the HTTP client: {e}")))?;
        Ok(LlmBrain {
            spec: spec.clone(),
            persona: persona(agent),
            http,
        })
    }

    /// `model at endpoint`, for notes.
    pub fn describe(&self) -> String {
        format!("{} at {}", self.spec.model, self.spec.endpoint)
    }

    /// The API key, resolved from its reference (empty without one).
    fn key(&self) -> Result<String, LlmError> {
        let Some(r) = &self.spec.api_key else {
            return Ok(String::new());
        };
        let key = SecretRef::parse(r)
            .and_then(|r| r.resolve(&Env::from_process()))
            .map_err(|_| LlmError(format!("the API key ({r}) could not be read")))?;
        let key = key.expose().trim().to_owned();
        // The client would panic on a header it cannot build.
        if key.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            return Err(LlmError(format!(
                "the API key ({r}) holds characters an HTTP header cannot carry"
            )));
        }
        Ok(key)
    }

    fn client(
        &self,
        key: &str,
        deadline: Instant,
        attempts: Arc<AtomicU32>,
    ) -> Client<OpenAIConfig> {
        let config = OpenAIConfig::new()
            .with_api_base(self.spec.endpoint.trim_end_matches('/'))
            .with_api_key(key)
            .with_org_id("")
            .with_project_id("");
        let http = self.http.clone();
        let per_attempt = (self.spec.timeout() / 3).max(Duration::from_secs(1));
        let service = tower::service_fn(move |factory: HttpRequestFactory| {
            send(
                http.clone(),
                factory,
                deadline,
                per_attempt,
                attempts.clone(),
            )
        });
        Client::build(self.http.clone(), config).with_http_service(service)
    }

    /// Answers `question`, using `tools`. Never waits past the brain's `timeout`.
    pub async fn answer(
        &self,
        question: &str,
        ctx: &Context,
        tools: &dyn Toolkit,
    ) -> Result<String, LlmError> {
        let started = Instant::now();
        let deadline = started + self.spec.timeout();
        let attempts = Arc::new(AtomicU32::new(0));
        let key = self.key()?;
        let client = self.client(&key, deadline, attempts.clone());
        let offered = tools.specs();
        let mut messages = vec![
            system(self.prompt(ctx)),
            user(format!(
                "{} asks: {}",
                ctx.asker,
                if ctx.text.trim().is_empty() {
                    question
                } else {
                    ctx.text.trim()
                }
            )),
        ];
        let mut written: u32 = 0;
        let max_turns = self.spec.max_turns.max(1);
        for turn in 0..max_turns {
            let left = self.spec.max_tokens.saturating_sub(written);
            if left == 0 {
                return Err(LlmError(format!(
                    "the token budget ({}) ran out after {turn} turns",
                    self.spec.max_tokens
                )));
            }
            // The last turn offers no tools: the model has to answer with what it has.
            let last = turn + 1 == max_turns;
            #[allow(deprecated)]
            let request = CreateChatCompletionRequest {
                model: self.spec.model.clone(),
                messages: messages.clone(),
                max_tokens: Some(left),
                temperature: self.spec.temperature,
                stream: Some(true),
                tools: (!last && !offered.is_empty())
                    .then(|| offered.iter().map(tool_of).collect()),
                ..Default::default()
            };
            let turn_out = tokio::time::timeout_at(deadline.into(), self.turn(&client, request))
                .await
                .map_err(|_| {
                    LlmError(format!(
                        "no answer within {} ({} request{})",
                        self.spec.timeout,
                        attempts.load(Ordering::Relaxed),
                        if attempts.load(Ordering::Relaxed) == 1 {
                            ""
                        } else {
                            "s"
                        }
                    ))
                })?
                .map_err(|e| explain(&e, attempts.load(Ordering::Relaxed), &key))?;
            written = written.saturating_add(turn_out.tokens);
            if turn_out.calls.is_empty() {
                let content = turn_out.content.trim().to_owned();
                if content.is_empty() {
                    return Err(LlmError("the model answered with nothing".into()));
                }
                tracing::debug!(model = %self.spec.model, turns = turn + 1, tokens = written, ms = started.elapsed().as_millis() as u64, "llm answered");
                return Ok(content);
            }
            messages.push(assistant(&turn_out));
            for call in &turn_out.calls {
                let result = run_tool(tools, &offered, call).await;
                messages.push(ChatCompletionRequestMessage::Tool(
                    ChatCompletionRequestToolMessage {
                        content: ChatCompletionRequestToolMessageContent::Text(result),
                        tool_call_id: call.id.clone(),
                    },
                ));
            }
        }
        Err(LlmError(format!("no answer after {max_turns} turns")))
    }

    /// One streamed turn: the text and the tool calls, assembled from the chunks.
    async fn turn(
        &self,
        client: &Client<OpenAIConfig>,
        request: CreateChatCompletionRequest,
    ) -> Result<Turn, OpenAIError> {
        let mut stream = client.chat().create_stream(request).await?;
        let mut out = Turn::default();
        let mut reported: Option<u32> = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if let Some(u) = &chunk.usage {
                reported = Some(u.completion_tokens);
            }
            for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
                if let Some(text) = choice.delta.content {
                    out.content.push_str(&text);
                }
                for tc in choice.delta.tool_calls.unwrap_or_default() {
                    let i = tc.index as usize;
                    if out.calls.len() <= i {
                        out.calls.resize_with(i + 1, Call::default);
                    }
                    let c = &mut out.calls[i];
                    if let Some(id) = tc.id {
                        c.id = id;
                    }
                    if let Some(f) = tc.function {
                        if let Some(n) = f.name {
                            c.name.push_str(&n);
                        }
                        if let Some(a) = f.arguments {
                            c.arguments.push_str(&a);
                        }
                    }
                }
            }
        }
        out.calls.retain(|c| !c.name.is_empty());
        for (i, c) in out.calls.iter_mut().enumerate() {
            if c.id.is_empty() {
                c.id = format!("call_{i}");
            }
        }
        out.tokens = reported.unwrap_or_else(|| {
            let chars =
                out.content.len() + out.calls.iter().map(|c| c.arguments.len()).sum::<usize>();
            (chars / CHARS_PER_TOKEN).max(1) as u32
        });
        Ok(out)
    }

    /// The system prompt: who the agent is, then what it remembers and what was said
    /// recently, within [`CONTEXT_TOKENS`] (memory first, then the newest events).
    fn prompt(&self, ctx: &Context) -> String {
        let mut budget = CONTEXT_TOKENS * CHARS_PER_TOKEN;
        let mut out = self.persona.clone();
        if !ctx.memory.is_empty() {
            let mut part = String::from(
                "\n\n## What you remember\nCite a fact you use as (memory ID, from event EVENT).\n",
            );
            for (id, fact, sources) in &ctx.memory {
                let line = format!(
                    "- [memory {id}] {fact}{}\n",
                    sources
                        .first()
                        .map(|s| format!(" (from event {s})"))
                        .unwrap_or_default()
                );
                if line.len() > budget / 2 {
                    break;
                }
                budget -= line.len();
                part.push_str(&line);
            }
            out.push_str(&part);
        }
        if !ctx.recent.is_empty() {
            let mut lines = Vec::new();
            for (sender, text) in ctx.recent.iter().rev() {
                let text: String = text.chars().take(500).collect();
                let line = format!("- {sender}: {}\n", text.replace('\n', " "));
                if line.len() > budget {
                    break;
                }
                budget -= line.len();
                lines.push(line);
            }
            out.push_str("\n\n## Recently on the floor (oldest first)\n");
            for l in lines.iter().rev() {
                out.push_str(l);
            }
        }
        out
    }
}

/// The persona part of the system prompt.
fn persona(agent: &AgentSpec) -> String {
    let mut out = format!("You are {}, a named agent", agent.shown_name());
    if !agent.description.trim().is_empty() {
        out.push_str(&format!(": {}", agent.description.trim()));
    }
    out.push_str(".\nYou answer people and coding agents on a shared project floor, briefly and in Markdown. ");
    if !agent.skills.is_empty() {
        out.push_str(&format!("Your skills: {}. ", agent.skills.join(", ")));
    }
    out.push_str("Use your tools rather than guessing; cite knowledge as (file › heading). Say plainly when you do not know.");
    out
}

/// An assembled turn.
#[derive(Debug, Default)]
struct Turn {
    content: String,
    calls: Vec<Call>,
    tokens: u32,
}

#[derive(Debug, Default, Clone)]
struct Call {
    id: String,
    name: String,
    arguments: String,
}

fn system(text: String) -> ChatCompletionRequestMessage {
    ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
        content: ChatCompletionRequestSystemMessageContent::Text(text),
        name: None,
    })
}

fn user(text: String) -> ChatCompletionRequestMessage {
    ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
        content: ChatCompletionRequestUserMessageContent::Text(text),
        name: None,
    })
}

fn assistant(turn: &Turn) -> ChatCompletionRequestMessage {
    #[allow(deprecated)]
    ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
        content: (!turn.content.is_empty())
            .then(|| ChatCompletionRequestAssistantMessageContent::Text(turn.content.clone())),
        tool_calls: Some(
            turn.calls
                .iter()
                .map(|c| {
                    ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                        id: c.id.clone(),
                        function: FunctionCall {
                            name: c.name.clone(),
                            arguments: c.arguments.clone(),
                        },
                    })
                })
                .collect(),
        ),
        ..Default::default()
    })
}

fn tool_of(t: &ToolSpec) -> ChatCompletionTools {
    ChatCompletionTools::Function(ChatCompletionTool {
        function: FunctionObject {
            name: t.name.to_owned(),
            description: Some(t.description.to_owned()),
            parameters: Some(t.parameters.clone()),
            strict: None,
        },
    })
}

/// Runs one tool call; whatever goes wrong is the result the model reads.
async fn run_tool(tools: &dyn Toolkit, offered: &[ToolSpec], call: &Call) -> String {
    if !offered.iter().any(|t| t.name == call.name) {
        return format!(
            "error: there is no tool named {:?}; the tools are {}",
            call.name,
            offered
                .iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let args: Value = if call.arguments.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str(&call.arguments) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return "error: the arguments must be a JSON object".into(),
            Err(e) => return format!("error: the arguments are not valid JSON ({e})"),
        }
    };
    let out = match tools.call(call.name.as_str(), &args).await {
        Ok(s) => s,
        Err(e) => format!("error: {e}"),
    };
    tracing::debug!(tool = %call.name, ok = !out.starts_with("error:"), "tool called");
    let mut out: String = out.chars().take(TOOL_RESULT_CHARS).collect();
    if out.len() >= TOOL_RESULT_CHARS {
        out.push_str("\n[cut]");
    }
    out
}

/// One HTTP request with retries: 429 (after `Retry-After`), 5xx, connection failures and
/// attempts that time out are tried again with backoff while the wall time allows; the last
/// answer (or error) is what the caller gets.
async fn send(
    http: reqwest::Client,
    factory: HttpRequestFactory,
    deadline: Instant,
    per_attempt: Duration,
    attempts: Arc<AtomicU32>,
) -> Result<reqwest::Response, OpenAIError> {
    let mut retry = 0;
    loop {
        let request = factory.build().await?;
        attempts.fetch_add(1, Ordering::Relaxed);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let wait = match tokio::time::timeout(per_attempt.min(left), http.execute(request)).await {
            Ok(Ok(resp)) => {
                let status = resp.status();
                if !(status.as_u16() == 429 || status.is_server_error()) || retry >= RETRIES {
                    return Ok(resp);
                }
                let backoff = BACKOFF * 2u32.pow(retry);
                let wait = retry_after(resp.headers()).unwrap_or(backoff);
                tracing::warn!(
                    status = status.as_u16(),
                    retry_in_ms = wait.as_millis() as u64,
                    "model endpoint refused; retrying"
                );
                if Instant::now() + wait >= deadline {
                    // Waiting as asked would pass the deadline: this answer is final.
                    return Ok(resp);
                }
                wait
            }
            Ok(Err(e)) if (e.is_connect() || e.is_timeout()) && retry < RETRIES => {
                tracing::warn!(error = %e, "model endpoint unreachable; retrying");
                BACKOFF * 2u32.pow(retry)
            }
            Ok(Err(e)) => return Err(OpenAIError::Reqwest(e)),
            Err(_) if retry < RETRIES => {
                tracing::warn!(
                    after_ms = per_attempt.min(left).as_millis() as u64,
                    "model endpoint timed out; retrying"
                );
                BACKOFF * 2u32.pow(retry)
            }
            Err(_) => return Err(timed_out()),
        };
        retry += 1;
        if Instant::now() + wait >= deadline {
            return Err(timed_out());
        }
        tokio::time::sleep(wait).await;
    }
}

fn timed_out() -> OpenAIError {
    OpenAIError::Boxed(Box::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the model endpoint did not answer in time",
    )))
}

/// The longest `Retry-After` taken as given (the wall budget caps it further).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After`, in either form HTTP allows: seconds, or a date. A date is measured from
/// the answer's own `Date` when it has one (so the two clocks need not agree), else from
/// this machine's clock; a date already past means "now".
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let now = h
        .get(reqwest::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
        .unwrap_or_else(std::time::SystemTime::now);
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// What went wrong, in a sentence for the note and the log. Never the key: the request
/// carries it only in a header, but an endpoint may repeat it in its error ("Incorrect
/// API key provided: …"), so whatever the endpoint said is scrubbed of it.
fn explain(e: &OpenAIError, attempts: u32, key: &str) -> LlmError {
    let tries = if attempts > 1 {
        format!(" after {attempts} attempts")
    } else {
        String::new()
    };
    let msg = match e {
        OpenAIError::ApiError(r) => {
            // Scrubbed before it is cut: a cut key would no longer be recognised.
            let m: String = scrub(&r.api_error.message, key)
                .chars()
                .take(ERROR_CHARS)
                .collect();
            format!("the endpoint answered {}{tries}: {m}", r.status_code)
        }
        OpenAIError::JSONDeserialize(err, _) => {
            format!("the endpoint sent JSON that is not a chat completion ({err})")
        }
        OpenAIError::StreamError(s) => format!("the answer stream broke: {s}"),
        OpenAIError::Reqwest(r) => format!("the endpoint could not be reached{tries}: {r}"),
        OpenAIError::Boxed(b) => format!("{b}{tries}"),
        other => other.to_string(),
    };
    LlmError(scrub(&msg, key))
}

/// `text` without `key` in it.
fn scrub(text: &str, key: &str) -> String {
    if key.is_empty() {
        text.to_owned()
    } else {
        text.replace(key, "[the API key]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_repeating_the_key_is_scrubbed_before_the_cut() {
        let key = "sk-live-0123456789abcdef";
        let body = format!("{}Incorrect API key provided: {key}", " ".repeat(190));
        let e = OpenAIError::ApiError(async_openai::error::ApiErrorResponse {
            status_code: reqwest::StatusCode::UNAUTHORIZED,
            api_error: async_openai::error::ApiError {
                message: body,
                ..Default::default()
            },
        });
        let said = explain(&e, 1, key).0;
        assert!(said.starts_with("the endpoint answered 401"), "{said}");
        assert!(!said.contains("sk-live-0123"), "{said}");
        let e = OpenAIError::StreamError(Box::new(async_openai::error::StreamError::EventStream(
            format!("bad key {key}"),
        )));
        let said = explain(&e, 1, key).0;
        assert!(said.ends_with("bad key [the API key]"), "{said}");
    }

    fn headers(pairs: &[(&'static str, &str)]) -> reqwest::header::HeaderMap {
        let mut h = reqwest::header::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(retry_after(&headers(&[])), None);
        let secs = |v| retry_after(&headers(&[("retry-after", v)]));
        assert_eq!(secs("2"), Some(Duration::from_secs(2)));
        assert_eq!(secs("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(secs("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(secs("-1"), None);
        assert_eq!(secs("soon"), None);
    }

    #[test]
    fn retry_after_is_a_date_measured_from_the_answers_date() {
        let h = headers(&[
            ("retry-after", "Wed, 21 Oct 2015 07:28:05 GMT"),
            ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]);
        assert_eq!(retry_after(&h), Some(Duration::from_secs(5)));
        // The two obsolete forms HTTP still accepts.
        let h = headers(&[
            ("retry-after", "Wednesday, 21-Oct-15 07:28:30 GMT"),
            ("date", "Wed Oct 21 07:28:00 2015"),
        ]);
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        // Already past: now.
        let h = headers(&[
            ("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT"),
            ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]);
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        // Without a Date, from this machine's clock: a date long gone is now, one far
        // ahead is capped.
        let gone = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert_eq!(retry_after(&gone), Some(Duration::ZERO));
        let ahead = httpdate::fmt_http_date(
            std::time::SystemTime::now() + Duration::from_secs(30 * 86_400),
        );
        let far = headers(&[("retry-after", ahead.as_str())]);
        assert_eq!(retry_after(&far), Some(MAX_RETRY_AFTER));
        // Not a date either.
        let bad = headers(&[("retry-after", "Wed, 21 Oct 2015 25:28:00 GMT")]);
        assert_eq!(retry_after(&bad), None);
    }
}
