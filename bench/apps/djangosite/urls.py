from django.urls import path

from djangosite import views

urlpatterns = [path("", views.page)]
