"""`{{ seconds|duration }}`: a span of time as people read it on the pages."""

from django import template

register = template.Library()
UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


@register.filter
def duration(seconds):
    """`45 s`, `3 min 20 s`, `2 h`, `1 d 4 h`: the two largest units, zeros left out."""
    left, counts = max(round(seconds), 0), []
    for name, size in UNITS:
        count, left = divmod(left, size)
        if count or counts:
            counts.append((count, name))
    return " ".join(f"{count} {name}" for count, name in counts[:2] if count) or "0 s"
