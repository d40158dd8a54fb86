"""Views: a form protected by CSRF (GET shows it, POST echoes the message) and a request probe."""
import os

from django.http import HttpResponseNotAllowed, JsonResponse
from django.shortcuts import render


def form(request):
    if request.method == "GET":
        return render(request, "form.html", {"pid": os.getpid()})
    if request.method == "POST":
        message = request.POST.get("message", "")
        return render(request, "echo.html", {"message": message})
    return HttpResponseNotAllowed(["GET", "POST"])


def info(request):
    return JsonResponse({
        "path": request.path,
        "query": request.GET.dict(),
        "host": request.get_host(),
        "scheme": request.scheme,
        "method": request.method,
    })
