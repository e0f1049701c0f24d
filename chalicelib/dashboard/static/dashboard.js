// The usage dashboard. Signs in with Cognito (USER_PASSWORD_AUTH), keeps the ID token in this
// closure only (no storage, no cookies), and draws what /usage and /usage/plan (or, for
// admins, /admin/...) answer for that token. Every text from data goes in with textContent.
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#14b8a6", "#f97316", "#64748b"];
  const COUNTS = ["requests", "failed_requests", "input_tokens", "output_tokens", "total_tokens"];

  let session = null; // {token, username, tenant, admin}
  let generation = 0; // bumped on sign-in and sign-out: late answers of an old session are dropped

  class SignedOut extends Error {}

  // ------------------------------------------------------------------ sign-in and the API

  function claimsOf(token) {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part + "===".slice((part.length + 3) % 4)), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  const SIGN_IN_ERRORS = {
    NotAuthorizedException: "Incorrect username or password.",
    UserNotFoundException: "Incorrect username or password.",
    PasswordResetRequiredException: "This account must reset its password first.",
    UserNotConfirmedException: "This account is not confirmed yet.",
    TooManyRequestsException: "Too many attempts; wait a moment and try again.",
  };

  async function initiateAuth(username, password) {
    let response;
    try {
      response = await fetch(config.cognitoEndpoint, {
        method: "POST",
        headers: {
          "Content-Type": "application/x-amz-json-1.1",
          "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
        },
        body: JSON.stringify({
          AuthFlow: "USER_PASSWORD_AUTH",
          ClientId: config.clientId,
          AuthParameters: { USERNAME: username, PASSWORD: password },
        }),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (error) {
      throw new Error("Cannot reach the sign-in service.");
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const type = String(body.__type || "").split("#").pop();
      throw new Error(SIGN_IN_ERRORS[type] || "Sign-in failed (" + (type || response.status) + ").");
    }
    if (body.ChallengeName) {
      throw new Error("This account must first answer the " + body.ChallengeName + " challenge (set a permanent password).");
    }
    const token = body.AuthenticationResult && body.AuthenticationResult.IdToken;
    if (!token) throw new Error("Sign-in gave no ID token.");
    return token; // the access and refresh tokens are not kept at all
  }

  async function api(path) {
    const mine = generation;
    if (!session) throw new SignedOut();
    let response;
    try {
      response = await fetch(path, {
        headers: { Authorization: "Bearer " + session.token },
        cache: "no-store",
        credentials: "omit",
      });
    } catch (error) {
      throw new Error("Cannot reach the API.");
    }
    if (mine !== generation) throw new SignedOut();
    if (response.status === 401) {
      signOut("Your session has expired. Please sign in again.");
      throw new SignedOut();
    }
    const body = await response.json().catch(() => null);
    if (mine !== generation) throw new SignedOut();
    if (!response.ok) throw new Error((body && body.Message) || "The API answered " + response.status + ".");
    return body;
  }

  function showSignIn(message) {
    $("dashboard-view").hidden = true;
    $("who").hidden = true;
    $("sign-in-view").hidden = false;
    $("sign-in-message").textContent = message || "";
    $("sign-in-message").hidden = !message;
    $("password").value = "";
    $("username").focus();
  }

  function signOut(message) {
    session = null;
    generation += 1;
    clearData();
    showSignIn(message);
  }

  async function onSignIn(event) {
    event.preventDefault();
    const button = $("sign-in-button");
    button.disabled = true;
    $("sign-in-message").hidden = true;
    try {
      const token = await initiateAuth($("username").value.trim(), $("password").value);
      const claims = claimsOf(token);
      const groups = claims["cognito:groups"] || [];
      generation += 1;
      session = {
        token: token,
        username: String(claims["cognito:username"] || claims.sub || ""),
        tenant: String(claims["custom:tenant_id"] || ""),
        admin: Array.isArray(groups) && groups.indexOf(config.adminGroup) >= 0,
      };
      $("password").value = "";
      $("sign-in-view").hidden = true;
      $("who-name").textContent = session.username + (session.admin ? " (admin)" : "") + " · tenant " + session.tenant;
      $("who").hidden = false;
      $("dashboard-view").hidden = false;
      $("tenant-picker").hidden = !session.admin;
      await refresh();
    } catch (error) {
      if (!(error instanceof SignedOut)) showSignIn(error.message);
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ loading

  function period() {
    return "?from=" + encodeURIComponent($("from").value) + "&to=" + encodeURIComponent($("to").value);
  }

  async function refresh(event) {
    if (event) event.preventDefault();
    if (!session) return;
    setStatus("Loading…");
    try {
      let usage, plan;
      if (session.admin) {
        const everyone = await api("admin/usage" + period());
        const tenant = pickTenant(everyone.tenants.map((t) => t.tenant_id));
        const base = "admin/tenants/" + encodeURIComponent(tenant);
        [usage, plan] = await Promise.all([api(base + "/usage" + period()), api(base + "/plan")]);
      } else {
        [usage, plan] = await Promise.all([api("usage" + period()), api("usage/plan")]);
      }
      render(usage, plan);
      setStatus("");
    } catch (error) {
      if (!(error instanceof SignedOut)) setStatus(error.message, true);
    }
  }

  function pickTenant(withUsage) {
    const select = $("tenant-select");
    const chosen = select.value || (withUsage.length ? withUsage[0] : session.tenant);
    const tenants = Array.from(new Set([session.tenant, chosen].concat(withUsage))).sort();
    select.replaceChildren(...tenants.map((t) => new Option(t, t, false, t === chosen)));
    return chosen;
  }

  function setStatus(text, bad) {
    $("status").textContent = text;
    $("status").className = bad ? "error" : "";
  }

  // ------------------------------------------------------------------ drawing

  const integer = (n) => Number(n).toLocaleString("en-US");

  function clearData() {
    const cells = ["total-cost"].concat(COUNTS.map((name) => "total-" + name.replace(/_/g, "-")));
    ["tenant-name", "period", "budget-month", "budget-text"].concat(cells).forEach((id) => {
      $(id).textContent = "";
      Object.keys($(id).dataset).forEach((key) => delete $(id).dataset[key]);
    });
    ["budget-bar", "cost-chart", "token-chart", "legend"].forEach((id) => $(id).replaceChildren());
    $("models-table").tBodies[0].replaceChildren();
    $("tenant-select").replaceChildren();
    setStatus("");
  }

  function render(usage, plan) {
    $("tenant-name").textContent = usage.tenant_id;
    $("period").textContent = usage.from + " to " + usage.to;
    $("total-cost").textContent = "$" + usage.totals.cost_usd;
    $("total-cost").dataset.value = usage.totals.cost_usd;
    COUNTS.forEach((name) => {
      const cell = $("total-" + name.replace(/_/g, "-"));
      cell.textContent = integer(usage.totals[name]);
      cell.dataset.value = String(usage.totals[name]);
    });
    const models = usage.models.map((m) => m.model_id);
    const color = (model) => COLORS[models.indexOf(model) % COLORS.length];
    const days = daysBetween(usage.from, usage.to);
    const byDay = new Map(usage.days.map((d) => [d.date, d.models]));
    drawBars($("cost-chart"), days, byDay, models, color, (m) => Number(m.cost_usd), (v) => "$" + trim(v));
    drawBars($("token-chart"), days, byDay, models, color, (m) => m.total_tokens, (v) => integer(Math.round(v)));
    $("legend").replaceChildren(...models.map((model) => {
      const item = document.createElement("li");
      item.append(swatch(color(model)), document.createTextNode(model));
      return item;
    }));
    $("models-table").tBodies[0].replaceChildren(...usage.models.map((m) => {
      const row = document.createElement("tr");
      [m.model_id].concat(COUNTS.map((c) => integer(m[c])), ["$" + m.cost_usd]).forEach((text) => {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      });
      return row;
    }));
    drawBudget(plan);
  }

  function trim(value) {
    return value >= 1 ? value.toFixed(2) : Number(value.toPrecision(3)).toString();
  }

  function daysBetween(first, last) {
    const days = [];
    for (let day = new Date(first + "T00:00:00Z"); day <= new Date(last + "T00:00:00Z"); day.setUTCDate(day.getUTCDate() + 1)) {
      days.push(day.toISOString().slice(0, 10));
    }
    return days;
  }

  function node(name, attributes, text) {
    const element = document.createElementNS(SVG, name);
    Object.entries(attributes).forEach(([key, value]) => element.setAttribute(key, String(value)));
    if (text !== undefined) element.textContent = text;
    return element;
  }

  function swatch(fill) {
    const box = node("svg", { viewBox: "0 0 12 12", "aria-hidden": "true" });
    box.append(node("rect", { width: 12, height: 12, rx: 2, fill: fill }));
    return box;
  }

  function niceStep(max, ticks) {
    const raw = max / ticks;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 2.5, 5, 10].map((f) => f * power).find((step) => step >= raw);
  }

  // Stacked bars: one per day of the period, one segment per model.
  function drawBars(svg, days, byDay, models, color, valueOf, label) {
    const width = 800, height = 260, left = 70, right = 10, top = 10, bottom = 30;
    const totals = days.map((day) => (byDay.get(day) || []).reduce((sum, m) => sum + valueOf(m), 0));
    const max = Math.max(0, ...totals);
    svg.replaceChildren();
    if (max <= 0) {
      svg.append(node("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, "No usage in this period."));
      return;
    }
    const step = niceStep(max, 4);
    const top_value = Math.ceil(max / step) * step;
    const y = (v) => top + (height - top - bottom) * (1 - v / top_value);
    for (let tick = 0; tick <= top_value + step / 2; tick += step) {
      svg.append(node("line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), class: "axis" }));
      svg.append(node("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end" }, label(tick)));
    }
    const slot = (width - left - right) / days.length;
    const barWidth = Math.max(1, slot * 0.7);
    const every = Math.ceil(days.length / 10);
    days.forEach((day, index) => {
      const x = left + index * slot + (slot - barWidth) / 2;
      let base = 0;
      const entries = byDay.get(day) || [];
      models.forEach((model) => {
        const entry = entries.find((m) => m.model_id === model);
        const value = entry ? valueOf(entry) : 0;
        if (value <= 0) return;
        const bar = node("rect", { x: x, y: y(base + value), width: barWidth, height: Math.max(0.5, y(base) - y(base + value)), fill: color(model) });
        bar.append(node("title", {}, day + " · " + model + ": " + label(value)));
        svg.append(bar);
        base += value;
      });
      if (index % every === 0) {
        svg.append(node("text", { x: left + index * slot + slot / 2, y: height - 10, "text-anchor": "middle" }, day.slice(5)));
      }
    });
  }

  function drawBudget(plan) {
    const month = plan.month_to_date;
    const budget = Number(plan.plan.monthly_budget_usd);
    const spent = Number(month.spent_usd);
    const share = budget > 0 ? spent / budget : 1;
    const fill = share >= 1 ? "#b91c1c" : share >= 0.8 ? "#f59e0b" : "#10b981";
    const bar = $("budget-bar");
    bar.replaceChildren(
      node("rect", { x: 0, y: 4, width: 800, height: 20, rx: 4, fill: "#e5e7eb" }),
      node("rect", { x: 0, y: 4, width: Math.min(1, share) * 800, height: 20, rx: 4, fill: fill })
    );
    $("budget-month").textContent = month.month;
    $("budget-text").textContent =
      "$" + month.spent_usd + " of $" + plan.plan.monthly_budget_usd + " spent (" + (share * 100).toFixed(1) + " %), $" +
      month.reserved_usd + " reserved by calls in flight, $" + month.remaining_usd + " left.";
    $("budget-text").dataset.spent = month.spent_usd;
    $("budget-text").dataset.budget = plan.plan.monthly_budget_usd;
  }

  // ------------------------------------------------------------------ start

  const today = new Date().toISOString().slice(0, 10);
  $("to").value = today;
  $("from").value = today.slice(0, 8) + "01";
  $("sign-in-form").addEventListener("submit", onSignIn);
  $("controls").addEventListener("submit", refresh);
  $("tenant-select").addEventListener("change", () => refresh());
  $("sign-out").addEventListener("click", () => signOut(""));
  showSignIn("");
})();
