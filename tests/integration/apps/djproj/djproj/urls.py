from django.urls import path

from . import views

urlpatterns = [
    path("form/", views.form, name="form"),
    path("info/", views.info, name="info"),
]
