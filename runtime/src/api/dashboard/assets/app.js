// The Polaris dashboard's one script: keeps an open transcript live over Server-Sent
// Events. Pages work without it. EventSource reconnects by itself and sends the last
// event id it saw (Last-Event-ID), so the server resumes right after it.
(function () {
  'use strict';
  var list = document.getElementById('events');
  if (!list || !list.dataset.live || !window.EventSource) {
    return;
  }
  var status = document.createElement('p');
  status.id = 'live-status';
  status.className = 'live';
  list.parentNode.insertBefore(status, list);
  var url = list.dataset.live + '?after=' + encodeURIComponent(list.dataset.after || '0');
  var source = new EventSource(url);
  source.onopen = function () {
    status.textContent = '● live';
    status.dataset.state = 'open';
  };
  source.onerror = function () {
    status.textContent = '○ reconnecting…';
    status.dataset.state = 'reconnecting';
  };
  source.onmessage = function (m) {
    if (document.getElementById('e' + m.lastEventId)) {
      return; // shown already (a resumed stream may repeat the last one)
    }
    var t = document.createElement('template');
    t.innerHTML = m.data; // server-rendered and escaped
    var item = t.content.firstElementChild;
    if (!item) {
      return;
    }
    item.dataset.shownAt = String(Date.now());
    list.insertBefore(item, list.firstChild);
    var empty = document.querySelector('p.empty');
    if (empty) {
      empty.remove();
    }
  };
})();
