// What the page (app.js) and the studio (studio.js) share: the server's token and the one way
// to call its REST routes. Loaded first; plain JS, no modules, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("lrcn-token") || "";

const headers = () => (token ? { Authorization: "Bearer " + token } : {});

// A URL for an <a href> or <video src>, which cannot send a header: the token as a parameter.
const withToken = (url) => (token ? url + (url.includes("?") ? "&" : "?") + "token=" +
                                    encodeURIComponent(token) : url);

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

// A REST call: JSON back, or an Error with the server's one-line {"error"}. A 401 asks for the
// token once, keeps it for the tab, and tries again.
async function api(path, options = {}) {
  const response = await fetch(path, { ...options,
    headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) {
    token = prompt("This server needs its token:") || "";
    sessionStorage.setItem("lrcn-token", token);
    return api(path, options);
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

const post = (path, body) => api(path, { method: "POST", body: JSON.stringify(body),
                                         headers: { "Content-Type": "application/json" } });
