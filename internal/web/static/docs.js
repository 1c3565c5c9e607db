// The API reference: renders the server's own OpenAPI document (/openapi.json) as a
// list of operations with their parameters, bodies and responses. Built from text nodes
// only, so nothing in the document can inject markup; no renderer from a CDN.
'use strict';

(function () {
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  let spec = null;

  function resolve(schema) {
    let guard = 0;
    while (schema && schema.$ref && guard++ < 10) {
      const name = schema.$ref.replace('#/components/schemas/', '');
      schema = (spec.components && spec.components.schemas && spec.components.schemas[name]) || null;
    }
    return schema || {};
  }

  function refName(schema) {
    if (!schema) return '';
    if (schema.$ref) return schema.$ref.replace('#/components/schemas/', '');
    if (schema.type === 'array' && schema.items) return refName(schema.items) + '[]';
    return '';
  }

  function typeOf(schema) {
    if (!schema) return '';
    if (schema.$ref) return refName(schema);
    let t = Array.isArray(schema.type) ? schema.type.filter(function (x) { return x !== 'null'; }).join(' | ') : (schema.type || '');
    if (t === 'array' && schema.items) t = typeOf(schema.items) + '[]';
    if (schema.enum) t += ' (' + schema.enum.join(', ') + ')';
    if (schema.format) t += ' <' + schema.format + '>';
    return t;
  }

  // fieldsTable lists the properties of an object schema, nested objects one level down
  // with a dotted name.
  function fieldsTable(schema, depth) {
    const s = resolve(schema);
    const table = el('table');
    const head = el('thead');
    const hr = el('tr');
    ['Field', 'Type', 'Required', 'Description'].forEach(function (h) { const th = el('th', h); th.scope = 'col'; hr.appendChild(th); });
    head.appendChild(hr);
    table.appendChild(head);
    const body = el('tbody');
    function add(props, required, prefix, level) {
      Object.keys(props || {}).forEach(function (name) {
        const p = props[name];
        const tr = el('tr');
        const td = el('td');
        td.appendChild(el('code', prefix + name));
        tr.appendChild(td);
        tr.appendChild(el('td', typeOf(p)));
        tr.appendChild(el('td', (required || []).indexOf(name) >= 0 ? 'yes' : ''));
        let desc = p.description || resolve(p).description || '';
        if (p.maxLength) desc += (desc ? ' ' : '') + '(at most ' + p.maxLength + ' characters)';
        const dd = el('td', desc, 'desc');
        tr.appendChild(dd);
        body.appendChild(tr);
        const inner = resolve(p.type === 'array' ? p.items : p);
        if (level < (depth || 1) && inner.properties) add(inner.properties, inner.required, prefix + name + (p.type === 'array' ? '[].' : '.'), level + 1);
      });
    }
    add(s.properties, s.required, '', 0);
    table.appendChild(body);
    const wrap = el('div', null, 'table-wrap');
    wrap.appendChild(table);
    return wrap;
  }

  function paramsTable(params) {
    const table = el('table');
    const head = el('thead');
    const hr = el('tr');
    ['Name', 'In', 'Type', 'Required', 'Description'].forEach(function (h) { const th = el('th', h); th.scope = 'col'; hr.appendChild(th); });
    head.appendChild(hr);
    table.appendChild(head);
    const body = el('tbody');
    params.forEach(function (p) {
      const tr = el('tr');
      const td = el('td');
      td.appendChild(el('code', p.name));
      tr.appendChild(td);
      tr.appendChild(el('td', p.in));
      let t = typeOf(p.schema);
      if (p.schema && p.schema.default !== undefined) t += ', default ' + JSON.stringify(p.schema.default);
      tr.appendChild(el('td', t));
      tr.appendChild(el('td', p.required ? 'yes' : ''));
      tr.appendChild(el('td', p.description || (p.schema && p.schema.description) || '', 'desc'));
      body.appendChild(tr);
    });
    table.appendChild(body);
    const wrap = el('div', null, 'table-wrap');
    wrap.appendChild(table);
    return wrap;
  }

  function operation(path, method, op) {
    const d = el('details', null, 'op');
    d.id = op.operationId || (method + path);
    const sum = el('summary');
    sum.appendChild(el('span', method.toUpperCase(), 'method ' + method));
    sum.appendChild(el('span', path, 'path'));
    sum.appendChild(el('span', op.summary || '', 'muted'));
    d.appendChild(sum);
    const body = el('div', null, 'op-body');
    if (op.description) body.appendChild(el('p', op.description.replace(/\*\*/g, ''), 'desc'));
    if (op.security && op.security.length) {
      body.appendChild(el('p', 'Authentication: Authorization: Bearer <JWT> or the loopze_session cookie.', 'muted small'));
    }
    if (op.parameters && op.parameters.length) {
      body.appendChild(el('h3', 'Parameters'));
      body.appendChild(paramsTable(op.parameters));
    }
    const rb = op.requestBody && op.requestBody.content && op.requestBody.content['application/json'];
    if (rb) {
      const h = el('h3', 'Request body ');
      h.appendChild(el('span', refName(rb.schema), 'schema-name'));
      body.appendChild(h);
      body.appendChild(fieldsTable(rb.schema, 1));
    }
    body.appendChild(el('h3', 'Responses'));
    const ul = el('ul');
    Object.keys(op.responses || {}).sort().forEach(function (code) {
      const r = op.responses[code];
      const li = el('li');
      li.appendChild(el('strong', code + ' '));
      li.appendChild(document.createTextNode(r.description || ''));
      const c = r.content && (r.content['application/json'] || r.content['application/problem+json']);
      if (c && c.schema && refName(c.schema)) {
        li.appendChild(document.createTextNode(' '));
        li.appendChild(el('span', refName(c.schema), 'schema-name'));
      }
      ul.appendChild(li);
    });
    body.appendChild(ul);
    const ok = op.responses && (op.responses['200'] || op.responses['201']);
    const okc = ok && ok.content && ok.content['application/json'];
    if (okc && okc.schema && resolve(okc.schema).properties) {
      const h = el('h3', 'Success body ');
      h.appendChild(el('span', refName(okc.schema), 'schema-name'));
      body.appendChild(h);
      body.appendChild(fieldsTable(okc.schema, 1));
    }
    d.appendChild(body);
    return d;
  }

  function render(root) {
    root.replaceChildren();
    const info = spec.info || {};
    const intro = el('section', null, 'card');
    intro.appendChild(el('h2', (info.title || 'API') + ' ' + (info.version || '')));
    if (info.description) intro.appendChild(el('p', info.description, 'desc'));
    root.appendChild(intro);
    const groups = {};
    const order = [];
    Object.keys(spec.paths || {}).forEach(function (path) {
      ['get', 'post', 'put', 'patch', 'delete'].forEach(function (m) {
        const op = spec.paths[path][m];
        if (!op) return;
        const tag = (op.tags && op.tags[0]) || 'other';
        if (!groups[tag]) { groups[tag] = []; order.push(tag); }
        groups[tag].push([path, m, op]);
      });
    });
    order.forEach(function (tag) {
      const sec = el('section');
      sec.appendChild(el('h2', tag.charAt(0).toUpperCase() + tag.slice(1)));
      groups[tag].forEach(function (o) { sec.appendChild(operation(o[0], o[1], o[2])); });
      root.appendChild(sec);
    });
    root.setAttribute('aria-busy', 'false');
  }

  document.addEventListener('DOMContentLoaded', async function () {
    const root = document.getElementById('docs');
    if (!root) return;
    try {
      const res = await fetch('/openapi.json', { headers: { 'Accept': 'application/json' } });
      if (!res.ok) throw new Error('HTTP ' + res.status);
      spec = await res.json();
      render(root);
    } catch (e) {
      root.replaceChildren(el('p', 'The API description could not be loaded (' + e.message + ').', 'error block'));
      root.setAttribute('aria-busy', 'false');
    }
  });
})();
