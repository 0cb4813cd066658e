use super::*;
use crate::user::{UserCommand, UserError};

#[test]
fn granting_admin_records_the_role() {
    test_at(5)
        .given(vec![signed_up()])
        .when(UserCommand::GrantAdmin)
        .then_expect_events(vec![UserEvent::AdminGranted { at: at(5) }]);
}

#[test]
fn granting_admin_to_an_admin_records_nothing() {
    test_at(5)
        .given(vec![signed_up(), UserEvent::AdminGranted { at: at(1) }])
        .when(UserCommand::GrantAdmin)
        .then_expect_events(vec![]);
}

#[test]
fn granting_admin_to_a_user_who_never_signed_up_is_refused() {
    test_at(5)
        .given_no_previous_events()
        .when(UserCommand::GrantAdmin)
        .then_expect_error(UserError::UnknownUser);
}
