"""The logged-in user, with their permissions, read from the `users` cache: with cached
sessions and the data version, a cached answer then costs no database round trip.

Only where that cache is shared by every process (the Redis tier): a password changed, an
account deactivated or a permission removed in one process must take effect in all at once,
which a per-process copy would not. A user's entry carries two version tokens
(caching.tokens): theirs, moved when they are saved (a password change, a deactivation, a
login's `last_login`), deleted or log out; and everyone's, moved when a group, a permission
or a membership changes. A reader racing a change stores what it read under the token it
started with, which nobody reads any more.
"""

from django.contrib.auth import get_user_model, user_logged_out
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.core.cache import caches
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from caching.tokens import VersionTokens

ALIAS = "users"
EVERYONE = "permissions"
tokens = VersionTokens(ALIAS)
User = get_user_model()


def user_token(user_id):
    return f"user:{user_id}"


class CachedModelBackend(ModelBackend):
    """ModelBackend whose get_user() answers from the `users` cache when it is shared, with
    the permissions ModelBackend caches on the user object filled in."""

    def get_user(self, user_id):
        if not tokens.shared:
            return super().get_user(user_id)
        version = f"{tokens.current(EVERYONE)}.{tokens.current(user_token(user_id))}"
        cache = caches[ALIAS]
        user = cache.get(f"user:{user_id}", version=version)
        if user is None:
            user = super().get_user(user_id)
            if user is not None:
                self.get_all_permissions(user)  # kept on the object: _perm_cache and the rest
                cache.set(f"user:{user_id}", user, version=version)
        return user


@receiver(post_save, sender=User)
@receiver(post_delete, sender=User)
def user_changed(sender, instance, **kwargs):
    tokens.move(user_token(instance.pk))


@receiver(user_logged_out)
def user_logged_out_everywhere(sender, user, **kwargs):
    if user is not None:
        tokens.move(user_token(user.pk))


@receiver(m2m_changed, sender=User.groups.through)
@receiver(m2m_changed, sender=User.user_permissions.through)
@receiver(m2m_changed, sender=Group.permissions.through)
@receiver(post_save, sender=Group)
@receiver(post_delete, sender=Group)
@receiver(post_save, sender=Permission)
@receiver(post_delete, sender=Permission)
def permissions_changed(sender, **kwargs):
    """Who may do what changed for some users: every user is read again once."""
    if kwargs.get("action", "post_").startswith("post_"):
        tokens.move(EVERYONE)
