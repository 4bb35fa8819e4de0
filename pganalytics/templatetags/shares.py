"""`{{ share|percent }}`: a share of a total (0..1) as people read it on the pages."""

from django import template

register = template.Library()


@register.filter
def percent(share):
    """`42.3 %`, `< 0.1 %` for a sliver that is not nothing, `–` for no share (None)."""
    if share is None:
        return "–"
    if 0 < share < 0.0005:
        return "< 0.1 %"
    return f"{share * 100:.1f} %"
