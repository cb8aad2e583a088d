"""Django's admin site is mounted only because django-rq's pages extend its templates.

Roles and their permissions change through portal.services (audited, separation of duties enforced), so
the admin site must not offer another way to edit them, not even to a superuser.
"""

from django.contrib import admin
from django.contrib.auth.models import Group

from portal.forms import ThrottledAdminAuthenticationForm

admin.site.unregister(Group)
# The admin sign-in is throttled and audited like the portal's (portal.signin).
admin.site.login_form = ThrottledAdminAuthenticationForm
# No model is registered, so the admin's sidebar would only say "You don't have permission to view or edit anything"
# beside the job dashboard.
admin.site.enable_nav_sidebar = False
