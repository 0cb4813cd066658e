//! The test email and the status of queued emails (the original's Celery tasks).

use twofold_domain::values::UserId;
use twofold_domain::{EventMetadata, UserError};
use twofold_nats::TaskState;
use uuid::Uuid;

use super::{App, AppError};

impl App {
    /// Queues a test email to the user; the answer is its task id.
    pub async fn send_test_email(
        &self,
        user_id: UserId,
        metadata: &EventMetadata,
    ) -> Result<Uuid, AppError> {
        let user = self.existing(user_id).await?;
        let email = user.email().ok_or(UserError::UnknownUser)?;
        let job = self
            .mail
            .to(user_id, email, metadata.request_id.as_deref())
            .test();
        let task_id = job.id;
        self.mail_queue.enqueue(job).await?;
        Ok(task_id)
    }

    /// The state of task `task_id`, if it is the caller's (or the caller is an admin).
    pub async fn task_status(
        &self,
        caller: UserId,
        task_id: Uuid,
    ) -> Result<Option<TaskState>, AppError> {
        let Some((owner, state)) = self.mail_queue.status(task_id).await? else {
            return Ok(None);
        };
        if owner != caller && self.is_admin(caller).await? != Some(true) {
            return Ok(None);
        }
        Ok(Some(state))
    }
}
