//! Queued emails and their task status. In this build, mail is delivered in process by the
//! mailer crate's transports; each job's state is kept for `/tasks/taskstatus`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Serialize;
use twofold_domain::values::UserId;
use twofold_mailer::Transport;
use twofold_nats::{Mail, MailJob};
use uuid::Uuid;

/// Finished task states kept for polling; older ones are forgotten first.
const TASKS_KEPT: usize = 10_000;

/// The task states of the original service (Celery's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskState {
    /// Queued, not yet sent.
    Pending,
    /// Handed to the transport.
    Success,
    /// The transport refused it.
    Failure,
}

/// What is known about a queued email.
#[derive(Debug, Clone)]
pub struct TaskStatus {
    /// Whose email it is: only they (or an admin) may see its status.
    pub owner: UserId,
    /// Its state.
    pub state: TaskState,
}

/// Queues emails for delivery.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Queues `mail` to `to` on behalf of `owner`; returns the task id.
    async fn queue(&self, owner: UserId, to: &str, mail: Mail) -> Uuid;
    /// The status of task `id`.
    async fn status(&self, id: Uuid) -> Option<TaskStatus>;
}

/// Delivers in the background of this process.
pub struct InProcessMailer {
    transport: Transport,
    from: String,
    tasks: Arc<Mutex<Tasks>>,
}

#[derive(Default)]
struct Tasks {
    by_id: HashMap<Uuid, TaskStatus>,
    order: VecDeque<Uuid>,
}

impl Tasks {
    fn set(&mut self, id: Uuid, status: TaskStatus) {
        if self.by_id.insert(id, status).is_none() {
            self.order.push_back(id);
            while self.order.len() > TASKS_KEPT {
                if let Some(oldest) = self.order.pop_front() {
                    self.by_id.remove(&oldest);
                }
            }
        }
    }
}

impl InProcessMailer {
    /// A mailer sending through `transport` with `from` as sender.
    pub fn new(transport: Transport, from: String) -> Self {
        Self {
            transport,
            from,
            tasks: Arc::default(),
        }
    }
}

fn record(tasks: &Mutex<Tasks>, id: Uuid, owner: UserId, state: TaskState) {
    if let Ok(mut tasks) = tasks.lock() {
        tasks.set(id, TaskStatus { owner, state });
    }
}

#[async_trait]
impl Mailer for InProcessMailer {
    async fn queue(&self, owner: UserId, to: &str, mail: Mail) -> Uuid {
        let job = MailJob {
            id: Uuid::new_v4(),
            to: to.to_owned(),
            mail,
        };
        let id = job.id;
        record(&self.tasks, id, owner, TaskState::Pending);
        let transport = self.transport.clone();
        let from = self.from.clone();
        let tasks = Arc::clone(&self.tasks);
        tokio::task::spawn_blocking(move || {
            let template = job.mail.template();
            let email = twofold_mailer::render(&job);
            let state = match transport.deliver(job.id, &from, &email) {
                Ok(()) => {
                    tracing::info!(job_id = %job.id, template, "email sent");
                    TaskState::Success
                }
                Err(error) => {
                    tracing::error!(job_id = %job.id, template, error = %error, "email not sent");
                    TaskState::Failure
                }
            };
            record(&tasks, job.id, owner, state);
        });
        id
    }

    async fn status(&self, id: Uuid) -> Option<TaskStatus> {
        self.tasks.lock().ok()?.by_id.get(&id).cloned()
    }
}
