// LOOPZE certificate store UI. Plain JavaScript, no libraries: the pages are rendered on
// the server; this file adds copying, the entry form (validate, create, edit) and delete,
// all through the JSON API with the session cookie. It never writes HTML strings: every
// value from the API goes into the page as text.
'use strict';

(function () {
  const api = '/api/v1/certs';
  const maxFile = 256 * 1024;

  function $(id) { return document.getElementById(id); }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  // call sends JSON to the API and returns {status, body}; body is null when empty.
  async function call(method, url, body, headers) {
    const opts = { method: method, credentials: 'same-origin', headers: Object.assign({ 'Accept': 'application/json' }, headers || {}) };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(url, opts);
    } catch (e) {
      return { status: 0, body: { message: 'The server could not be reached. Check the connection and try again.' } };
    }
    let data = null;
    const text = await res.text();
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = { message: text.slice(0, 300) }; }
    }
    return { status: res.status, body: data };
  }

  // problemMessage turns an API error body into one sentence for people.
  function problemMessage(res) {
    if (res.status === 401) return 'Your session has ended. Sign in again (your input stays on this page if you sign in from another tab).';
    if (res.status === 403) return (res.body && res.body.message) || 'You are not allowed to do this.';
    if (res.status === 412) return 'Someone changed this entry since you opened it. Reload the page to see the current version.';
    return (res.body && res.body.message) || ('The request failed (HTTP ' + res.status + ').');
  }

  // ---- Copy the full fingerprint -------------------------------------------------------
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      const ta = el('textarea');
      ta.value = text;
      ta.setAttribute('readonly', '');
      ta.className = 'sr-only';
      document.body.appendChild(ta);
      ta.select();
      const ok = document.execCommand('copy');
      document.body.removeChild(ta);
      if (ok) { resolve(); } else { reject(new Error('copy refused')); }
    });
  }

  function initCopy() {
    document.addEventListener('click', function (ev) {
      const b = ev.target.closest('button[data-copy]');
      if (!b) return;
      const status = $('copy-status');
      copyText(b.dataset.copy).then(function () {
        b.textContent = 'Copied';
        if (status) status.textContent = 'Fingerprint copied.';
        setTimeout(function () { b.textContent = 'Copy'; }, 1500);
      }, function () {
        if (status) status.textContent = 'Copying failed: select the fingerprint in the tooltip instead.';
      });
    });
  }

  // ---- The entry form ------------------------------------------------------------------
  const fields = ['id', 'name', 'type', 'source', 'certPem', 'keyPem', 'certPath', 'keyPath', 'notes',
    'keyPassphrase', 'pkcs12', 'passphrase', 'passphraseFile'];

  function inputFor(field) {
    if (field === 'source') return $('f-source-inline');
    if (field === 'pkcs12') return $('f-p12File');
    if (field === 'certDer') return $('f-certPem');
    if (field === 'keyDer') return $('f-keyPem');
    return $('f-' + field);
  }

  // base64 of an ArrayBuffer, in chunks so a large file does not overflow the call stack.
  function base64Of(buf) {
    const bytes = new Uint8Array(buf);
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  }

  function clearErrors() {
    fields.forEach(function (f) {
      const slot = $('err-' + f);
      if (slot) { slot.hidden = true; slot.textContent = ''; }
      const input = inputFor(f);
      if (input) input.removeAttribute('aria-invalid');
    });
    const fe = $('form-error');
    fe.hidden = true;
    fe.textContent = '';
  }

  // showErrors puts each problem next to the field its location names (body.certPem →
  // the certPem field) and the rest at the top of the form. It returns the first field
  // with a problem, to move the focus there.
  function showErrors(problems, fallback) {
    let first = null;
    const general = [];
    (problems || []).forEach(function (p) {
      const field = String(p.location || '').replace(/^body\./, '');
      const slot = $('err-' + ({ certDer: 'certPem', keyDer: 'keyPem' }[field] || field));
      const input = inputFor(field);
      if (slot && input && !slot.parentElement.closest('[hidden]')) {
        slot.textContent = slot.textContent ? slot.textContent + ' ' + p.message : p.message;
        slot.hidden = false;
        input.setAttribute('aria-invalid', 'true');
        if (!first) first = input;
      } else {
        general.push((field ? field + ': ' : '') + p.message);
      }
    });
    if (general.length || (!first && fallback)) {
      const fe = $('form-error');
      fe.textContent = general.length ? general.join(' ') : fallback;
      if (general.length && fallback) fe.textContent = fallback + ' ' + fe.textContent;
      fe.hidden = false;
      if (!first) first = fe;
    }
    return first;
  }

  function initForm(form) {
    const mode = form.dataset.mode;
    const typeSel = $('f-type');
    const busy = $('busy');
    const buttons = [$('validate'), $('save')];

    function type() { return typeSel.value; }
    function source() { return $('f-source-file').checked ? 'file' : 'inline'; }
    function isPair() { return type() !== 'ca-bundle'; }

    // sync shows the inputs that apply to the chosen type and source.
    function sync() {
      form.querySelectorAll('[data-source]').forEach(function (g) { g.hidden = g.dataset.source !== source(); });
      form.querySelectorAll('[data-pair]').forEach(function (g) { g.hidden = !isPair(); });
      form.querySelectorAll('[data-type-hint]').forEach(function (g) {
        g.hidden = (g.dataset.typeHint === 'pair') !== isPair();
      });
    }
    typeSel.addEventListener('change', sync);
    $('f-source-inline').addEventListener('change', sync);
    $('f-source-file').addEventListener('change', sync);
    sync();

    // A local file is read in the browser and put into the text area; it is sent only
    // with Validate or Save, like pasted PEM. A binary (DER) file cannot be shown there: it
    // is kept as base64 and sent as certDer or keyDer, until the text area is typed in.
    const der = {};
    form.querySelectorAll('input[type=file][data-target]').forEach(function (picker) {
      const target = $(picker.dataset.target);
      target.addEventListener('input', function () { delete der[target.id]; delete picker.dataset.der; });
      picker.addEventListener('change', function () {
        const file = picker.files && picker.files[0];
        if (!file) return;
        const slot = $('err-' + target.name);
        if (file.size > maxFile) {
          slot.textContent = 'That file is larger than 256 KiB; a PEM file is much smaller.';
          slot.hidden = false;
          return;
        }
        const reader = new FileReader();
        reader.onload = function () {
          const bytes = new Uint8Array(reader.result);
          const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
          delete der[target.id];
          delete picker.dataset.der;
          if (text.includes('-----BEGIN')) {
            target.value = text;
          } else {
            der[target.id] = base64Of(reader.result);
            picker.dataset.der = file.name;
            target.value = '';
            target.placeholder = 'Binary (DER) file ' + file.name + ' loaded; it is sent as DER.';
          }
          slot.hidden = true;
          target.removeAttribute('aria-invalid');
        };
        reader.onerror = function () {
          slot.textContent = 'The file could not be read.';
          slot.hidden = false;
        };
        reader.readAsArrayBuffer(file);
      });
    });

    // A PKCS#12 file is read in the browser as bytes and sent base64 with Validate or
    // Save; its passphrase goes with it and is never kept by the page or the server.
    let p12 = '';
    const p12Picker = $('f-p12File');
    p12Picker.addEventListener('change', function () {
      const file = p12Picker.files && p12Picker.files[0];
      const slot = $('err-pkcs12');
      p12 = '';
      delete p12Picker.dataset.loaded;
      if (!file) return;
      if (file.size > maxFile) {
        slot.textContent = 'That file is larger than 256 KiB; a PKCS#12 file is much smaller.';
        slot.hidden = false;
        return;
      }
      const reader = new FileReader();
      reader.onload = function () {
        p12 = base64Of(reader.result);
        p12Picker.dataset.loaded = file.name;
        slot.hidden = true;
        p12Picker.removeAttribute('aria-invalid');
      };
      reader.onerror = function () {
        slot.textContent = 'The file could not be read.';
        slot.hidden = false;
      };
      reader.readAsArrayBuffer(file);
    });

    // material returns the material fields the user gave; on the edit form, unchanged
    // paths are not material (the stored ones stay).
    function material() {
      const m = {};
      if (source() === 'inline') {
        const cert = $('f-certPem').value.trim();
        const key = $('f-keyPem').value.trim();
        if (isPair() && p12) {
          m.pkcs12 = p12;
          if ($('f-passphrase').value) m.passphrase = $('f-passphrase').value;
          return m;
        }
        if (cert) m.certPem = cert + '\n';
        else if (der['f-certPem']) m.certDer = der['f-certPem'];
        if (key && isPair()) m.keyPem = key + '\n';
        else if (der['f-keyPem'] && isPair()) m.keyDer = der['f-keyPem'];
        if ((m.keyPem || m.keyDer) && $('f-keyPassphrase').value) m.keyPassphrase = $('f-keyPassphrase').value;
      } else {
        const cp = $('f-certPath').value.trim();
        const kp = $('f-keyPath').value.trim();
        const pp = $('f-passphraseFile').value.trim();
        const changed = mode === 'create' || form.dataset.source !== 'file' ||
          cp !== form.dataset.certPath || kp !== form.dataset.keyPath || pp !== form.dataset.passphraseFile;
        if (changed) {
          if (cp) m.certPath = cp;
          if (kp && isPair()) m.keyPath = kp;
          if (isPair()) m.passphraseFile = pp;
        }
      }
      return m;
    }

    function entry(forValidate) {
      const body = { name: $('f-name').value.trim(), notes: $('f-notes').value };
      const m = material();
      if (mode === 'create') {
        body.id = $('f-id').value.trim();
        body.type = type();
        body.source = source();
      } else if (forValidate || Object.keys(m).length || source() !== form.dataset.source) {
        body.id = form.dataset.id;
        body.type = type();
        body.source = source();
      }
      return Object.assign(body, m);
    }

    function setBusy(text) {
      buttons.forEach(function (b) { b.disabled = !!text; });
      busy.textContent = text || '';
    }

    const preview = $('preview');
    function list(box, items) {
      const ul = box.querySelector('ul');
      ul.replaceChildren();
      (items || []).forEach(function (p) {
        const field = String(p.location || '').replace(/^body\./, '');
        ul.appendChild(el('li', (field ? field + ': ' : '') + p.message));
      });
      box.hidden = !items || items.length === 0;
    }

    function showPreview(res) {
      const v = res.body || {};
      const status = $('preview-status');
      const dl = $('preview-meta');
      dl.replaceChildren();
      if (v.valid) {
        status.textContent = (v.warnings && v.warnings.length) ? 'Valid, with warnings. Nothing is saved yet.' : 'Valid. Nothing is saved yet.';
        status.className = 'notice ' + ((v.warnings && v.warnings.length) ? 'warn' : 'ok');
      } else {
        status.textContent = 'Not valid: fix the errors below, then validate again.';
        status.className = 'notice bad';
      }
      const m = v.metadata;
      if (m) {
        const rows = [
          ['Fingerprint (SHA-256)', m.fingerprintSha256, 'preview-fingerprint'],
          ['Subject', m.subject],
          ['Issuer', m.issuer],
          ['Serial number', m.serialNumber],
          ['Valid from', m.notBefore],
          ['Valid until', m.notAfter + (m.expired ? ' (expired)' : ' (' + m.daysToExpiry + ' days left)')],
          ['DNS names', (m.dnsNames || []).join(', ') || '—'],
          ['Certificates', m.certCount],
          ['Key algorithm', m.keyAlgorithm],
          ['Private key', m.hasPrivateKey ? 'yes, matches the certificate' : 'no'],
        ];
        rows.forEach(function (r) {
          dl.appendChild(el('dt', r[0]));
          const dd = el('dd');
          const code = el(r[2] ? 'code' : 'span', r[1]);
          if (r[2]) code.id = r[2];
          dd.appendChild(code);
          dl.appendChild(dd);
        });
      }
      list($('preview-warnings'), v.warnings);
      list($('preview-errors'), v.errors);
      preview.hidden = false;
    }

    $('validate').addEventListener('click', async function () {
      clearErrors();
      const body = entry(true);
      if (mode === 'edit' && !body.certPem && !body.certDer && !body.certPath && !body.pkcs12) {
        showErrors([], 'Enter new material to validate it; the stored material was validated when it was saved.');
        return;
      }
      setBusy('Validating…');
      const res = await call('POST', api + '/validate', body);
      setBusy('');
      if (res.status !== 200) {
        const first = showErrors(res.body && res.body.errors, problemMessage(res));
        if (first) first.focus();
        return;
      }
      const first = showErrors(res.body.errors);
      showPreview(res);
      (res.body.valid ? preview : first || preview).focus();
    });

    form.addEventListener('submit', async function (ev) {
      ev.preventDefault();
      clearErrors();
      const body = entry(false);
      let res;
      setBusy(mode === 'create' ? 'Creating…' : 'Saving…');
      if (mode === 'create') {
        res = await call('POST', api, body);
      } else {
        res = await call('PUT', api + '/' + encodeURIComponent(form.dataset.id), body,
          { 'If-Match': '"' + form.dataset.version + '"' });
      }
      if (res.status === 200 || res.status === 201) {
        const id = (res.body && res.body.id) || body.id || form.dataset.id;
        const dest = '/certs?' + (mode === 'create' ? 'created=' : 'updated=') + encodeURIComponent(id);
        const warnings = (res.body && res.body.warnings) || [];
        if (warnings.length === 0) {
          window.location.assign(dest);
          return;
        }
        // Saved anyway (an expired certificate is a warning, not a failure): say so, show
        // what was found, and let the operator read it before going back to the list.
        setBusy('');
        showPreview({ body: { valid: true, metadata: res.body, warnings: warnings, errors: [] } });
        const status = $('preview-status');
        status.textContent = (mode === 'create' ? 'Created' : 'Saved') + ', with the warnings below. ';
        const back = el('a', 'Back to the list');
        back.href = dest;
        back.id = 'saved-continue';
        status.appendChild(back);
        $('save').disabled = true;
        back.focus();
        return;
      }
      setBusy('');
      let problems = res.body && res.body.errors;
      let fallback = problemMessage(res);
      if (res.status === 409 && mode === 'create' && !(res.body && res.body.references)) {
        problems = [{ location: 'body.id', message: fallback }];
        fallback = '';
      }
      const first = showErrors(problems, (problems && problems.length) ? 'The entry was not saved.' : fallback);
      if (first) first.focus();
    });

    buttons.forEach(function (b) { b.disabled = false; });
  }

  // ---- Delete --------------------------------------------------------------------------
  function renderReferences(refs, total) {
    const section = $('references');
    section.replaceChildren();
    section.appendChild(el('h2', 'Still referenced'));
    section.appendChild(el('p', 'This entry cannot be deleted: ' + (total || refs.length) +
      ' deployed node field(s) reference it. Change these nodes to use another entry (or remove them), deploy the flows, then delete it.', 'notice bad'));
    const wrap = el('div', null, 'table-wrap');
    const table = el('table', null, 'refs');
    table.id = 'refs';
    const head = el('thead');
    const hr = el('tr');
    ['Flow', 'Node', 'Node type', 'Field'].forEach(function (h) { const th = el('th', h); th.scope = 'col'; hr.appendChild(th); });
    head.appendChild(hr);
    table.appendChild(head);
    const body = el('tbody');
    refs.forEach(function (r) {
      const tr = el('tr');
      [['Flow', r.flowId, true], ['Node', r.nodeId, true], ['Node type', r.nodeType], ['Field', r.field, true]].forEach(function (c) {
        const td = el('td');
        td.dataset.label = c[0];
        td.appendChild(el(c[2] ? 'code' : 'span', c[1]));
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.appendChild(body);
    wrap.appendChild(table);
    section.appendChild(wrap);
    const back = el('p');
    const a = el('a', 'Back to the certificates');
    a.href = '/certs';
    back.appendChild(a);
    section.appendChild(back);
  }

  function initDelete(button) {
    button.addEventListener('click', async function () {
      const id = button.dataset.id;
      const errBox = $('delete-error');
      errBox.hidden = true;
      button.disabled = true;
      const res = await call('DELETE', api + '/' + encodeURIComponent(id), undefined,
        { 'If-Match': '"' + button.dataset.version + '"' });
      if (res.status === 204 || res.status === 404) {
        window.location.assign('/certs?deleted=' + encodeURIComponent(id));
        return;
      }
      if (res.status === 409 && res.body && res.body.references) {
        renderReferences(res.body.references, res.body.totalReferences);
        return;
      }
      errBox.textContent = problemMessage(res);
      errBox.hidden = false;
      button.disabled = false;
      errBox.focus();
    });
    button.disabled = false;
  }

  // ---- Restore a version (History) ----------------------------------------------------
  // Restore asks first, in the page: the version, its fingerprint, and that it becomes a
  // new version of the entry. The request carries the entry's ETag, so a restore over a
  // change made meanwhile is refused (412) instead of undoing it silently.
  function initRestore(table) {
    const id = table.dataset.id;
    const entryVersion = table.dataset.version;
    const box = $('restore-confirm');
    const question = $('restore-question');
    const yes = $('restore-yes');
    const errBox = $('restore-error');
    let chosen = null;
    table.querySelectorAll('button.restore').forEach(function (b) {
      b.addEventListener('click', function () {
        chosen = b;
        errBox.hidden = true;
        question.textContent = 'Restore version ' + b.dataset.version + ' of ' + id + ' (fingerprint ' +
          b.dataset.fingerprint + ')? Its fields and material become a new version; references stay as they are.';
        yes.textContent = 'Restore version ' + b.dataset.version;
        box.hidden = false;
        yes.focus();
      });
      b.disabled = false;
    });
    $('restore-no').addEventListener('click', function () {
      box.hidden = true;
      if (chosen) chosen.focus();
      chosen = null;
    });
    yes.addEventListener('click', async function () {
      if (!chosen) return;
      const version = chosen.dataset.version;
      yes.disabled = true;
      const headers = entryVersion !== '0' ? { 'If-Match': '"' + entryVersion + '"' } : {};
      const res = await call('POST', api + '/' + encodeURIComponent(id) + '/versions/' + encodeURIComponent(version) + '/restore',
        undefined, headers);
      yes.disabled = false;
      if (res.status === 200 || res.status === 201) {
        window.location.assign('/certs/' + encodeURIComponent(id) + '/history?restored=' + encodeURIComponent(version));
        return;
      }
      box.hidden = true;
      if (res.status === 409 && res.body && res.body.references) {
        errBox.textContent = 'Version ' + version + ' has another type, and ' + (res.body.totalReferences || res.body.references.length) +
          ' deployed node field(s) reference this entry: change those nodes first.';
      } else {
        errBox.textContent = problemMessage(res);
      }
      errBox.hidden = false;
      errBox.focus();
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    const versions = $('versions');
    if (versions) initRestore(versions);
    initCopy();
    const form = $('cert-form');
    if (form) initForm(form);
    const del = $('delete');
    if (del) initDelete(del);
  });
})();
