from django.urls import path

from soa import views

urlpatterns = [
    path("", views.mailbox_list_view, name="mailbox_list"),
    path("<int:pk>/", views.mailbox_detail_view, name="mailbox_detail"),
]
