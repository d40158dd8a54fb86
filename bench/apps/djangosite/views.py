from django.shortcuts import render

ITEMS = [
    {"id": i, "name": "item <%d> & friends" % i, "price": 1.25 * i, "tags": ["a", "b", "c"][: i % 3 + 1]}
    for i in range(1, 11)
]


def page(request):
    return render(request, "page.html", {"title": "Corral bench", "items": ITEMS})
