# Creates an organizer, a live event with its waiting list on, and one sold-out
# product (quota 0), then prints the product's id.
from datetime import timedelta
from django.utils.timezone import now
from django_scopes import scopes_disabled
from pretix.base.models import Organizer, Event, Item, Quota

with scopes_disabled():
    o = Organizer.objects.filter(slug='bench').first()
    if not o:
        o = Organizer.objects.create(slug='bench', name='Bench')
    e = Event.objects.filter(organizer=o, slug='vaccine').first()
    if not e:
        e = Event.objects.create(
            organizer=o, slug='vaccine', name='Vaccination', currency='EUR',
            date_from=now() + timedelta(days=30),
            presale_start=now() - timedelta(days=1),
            presale_end=now() + timedelta(days=29),
            live=True,
        )
    e.settings.waiting_list_enabled = True
    e.settings.waiting_list_auto = False
    item = Item.objects.filter(event=e, name='Dose').first()
    if not item:
        item = Item.objects.create(event=e, name='Dose', default_price=0, allow_waitinglist=True, active=True)
        q = Quota.objects.create(event=e, name='Doses', size=0)
        q.items.add(item)
    print('ITEM', item.pk)
