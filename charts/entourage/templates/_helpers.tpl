{{/* The objects' name: the release name when it already says entourage, else "<release>-entourage". */}}
{{- define "entourage.fullname" -}}
{{- if contains "entourage" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-entourage" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. The selector labels stay those of manifests/base, so both installs select alike. */}}
{{- define "entourage.labels" -}}
app.kubernetes.io/name: entourage
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The webhook Pods' selector: the release's own, so that two releases in one namespace never select each
other's Pods. A Deployment installed by an older chart selects without the instance (a selector is immutable):
upgrades keep that selector, everywhere it is used, until the Deployment is replaced (docs/operations.md,
"Upgrading to instance selectors"). */}}
{{- define "entourage.selectorLabels" -}}
app.kubernetes.io/name: entourage
app.kubernetes.io/component: webhook
{{- if not (include "entourage.legacySelector" .) }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- end -}}

{{/* The pod template's labels: the selector's, and always the instance. */}}
{{- define "entourage.podLabels" -}}
app.kubernetes.io/name: entourage
app.kubernetes.io/component: webhook
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* "true" when the release's Deployment exists and selects without the instance label (an older chart). */}}
{{- define "entourage.legacySelector" -}}
{{- $d := lookup "apps/v1" "Deployment" .Release.Namespace (include "entourage.fullname" .) -}}
{{- if and $d $d.spec $d.spec.selector $d.spec.selector.matchLabels (not (hasKey $d.spec.selector.matchLabels "app.kubernetes.io/instance")) -}}
true
{{- end -}}
{{- end -}}

{{/* The image, by digest when one is given: the webhook's and the injected adapter's and ambassador's. */}}
{{- define "entourage.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- if not (hasPrefix "sha256:" $image.digest) -}}
{{- fail (printf "image.digest %q: a digest starts with sha256:" $image.digest) -}}
{{- end -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Service's DNS name: the apiserver verifies the serving certificate against it. */}}
{{- define "entourage.serviceHost" -}}
{{- printf "%s.%s.svc" (include "entourage.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* Whether entourage patches its own caBundle at start (and so needs a token and RBAC). */}}
{{- define "entourage.patchCABundle" -}}
{{- $c := .Values.certificates -}}
{{- if not (has $c.source (list "job" "generate" "existingSecret" "certManager")) -}}
{{- fail (printf "certificates.source %q: one of job, generate, existingSecret, certManager" $c.source) -}}
{{- end -}}
{{- if and (eq $c.source "job") (not $c.patchCABundle) -}}
{{- fail "certificates.source job needs certificates.patchCABundle: the replicas write the Job's CA into the webhooks" -}}
{{- end -}}
{{- if and $c.patchCABundle (ne $c.source "certManager") -}}true{{- end -}}
{{- end -}}

{{/* A webhook's namespaceSelector: the excluded namespaces (always the release's own) and the user's extras. */}}
{{- define "entourage.namespaceSelector" -}}
{{- $root := index . 0 -}}
{{- $extra := index . 1 -}}
{{- $excluded := concat $root.Values.webhook.excludedNamespaces (list $root.Release.Namespace) | uniq -}}
{{- $expressions := list (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" $excluded) -}}
{{- $selector := dict "matchExpressions" (concat $expressions ($extra.matchExpressions | default list)) -}}
{{- with $extra.matchLabels }}{{ $_ := set $selector "matchLabels" . }}{{ end -}}
{{- toYaml $selector -}}
{{- end -}}

{{/* checkov's findings that stay, each with its reason (SECURITY.md lists them); only those that apply. */}}
{{- define "entourage.deploymentSkips" -}}
{{- include "entourage.imageSkips" . }}
{{- if include "entourage.patchCABundle" . }}
checkov.io/skip-token: >-
  CKV_K8S_38=serve --patch-ca-bundle needs the token to patch its MutatingWebhookConfiguration at start;
  without it (the cert-manager overlay and chart mode) the token is not mounted
{{- end }}
{{- if .Values.hostNetwork }}
checkov.io/skip-host-network: >-
  CKV_K8S_19=hostNetwork is asked for: the control plane cannot reach Pod IPs with this CNI (EKS custom
  networking)
{{- end }}
{{- end -}}

{{/* The image's findings, on every workload that runs entourage's image (the Deployment, the certificate Jobs). */}}
{{- define "entourage.imageSkips" -}}
{{- if not .Values.image.digest }}
checkov.io/skip-image-digest: >-
  CKV_K8S_43=The base names the release tag; pin a digest with make deploy IMAGE set to repo@sha256:...
  or the chart's image.digest
{{- end }}
{{- if ne .Values.image.pullPolicy "Always" }}
checkov.io/skip-pull-policy: >-
  CKV_K8S_15=IfNotPresent on purpose: with failurePolicy Fail a replica must restart while the registry is
  down; a digest pins the content
{{- end }}
{{- end -}}

{{/* One webhook, as one entry, or two for a named revision (docs/operations.md, "Revisions"): the object's
`entourage.dev/rev` label picks its revision; an object without it goes by its namespace's label; with neither,
the default revision (`revision` empty) takes it. So exactly one revision's webhook is called for any object. */}}
{{- define "entourage.webhookEntries" -}}
{{- $root := .root -}}
{{- $rev := $root.Values.revision -}}
{{- $unlabelled := dict "key" "entourage.dev/rev" "operator" "DoesNotExist" -}}
{{- if $rev }}
{{- $mine := dict "key" "entourage.dev/rev" "operator" "In" "values" (list $rev) }}
{{- include "entourage.webhookEntry" (merge (dict "namespaceExtra" list "objectExtra" (list $mine)) .) }}
{{- include "entourage.webhookEntry" (merge (dict "name" (printf "by-namespace.%s" .name) "namespaceExtra" (list $mine) "objectExtra" (list $unlabelled)) .) }}
{{- else }}
{{- include "entourage.webhookEntry" (merge (dict "namespaceExtra" (list $unlabelled) "objectExtra" (list $unlabelled)) .) }}
{{- end }}
{{- end -}}

{{- define "entourage.webhookEntry" -}}
{{- $root := .root -}}
{{- $name := include "entourage.fullname" $root -}}
{{- $namespaceSelector := include "entourage.namespaceSelector" (list $root .selectors.namespaceSelector) | fromYaml -}}
{{- $_ := set $namespaceSelector "matchExpressions" (concat $namespaceSelector.matchExpressions .namespaceExtra) -}}
{{- $user := .selectors.objectSelector | default dict -}}
{{- $objectSelector := dict "matchExpressions" (concat ($user.matchExpressions | default list) .objectExtra) -}}
{{- with $user.matchLabels }}{{ $_ := set $objectSelector "matchLabels" . }}{{ end }}
  - name: {{ .name }}
    admissionReviewVersions: ["v1", "v1beta1"]
    sideEffects: None
    failurePolicy: {{ .failurePolicy }}
    reinvocationPolicy: {{ .reinvocationPolicy }}
    matchPolicy: Equivalent
    timeoutSeconds: {{ .timeoutSeconds }}
    clientConfig:
      service:
        name: {{ $name }}
        namespace: {{ $root.Release.Namespace }}
        path: /mutate
        port: {{ $root.Values.webhook.servicePort }}
      {{- with .caBundle }}
      caBundle: {{ . }}
      {{- end }}
    rules:
      {{- toYaml .rules | nindent 6 }}
    namespaceSelector:
      {{- toYaml $namespaceSelector | nindent 6 }}
    objectSelector:
      {{- toYaml $objectSelector | nindent 6 }}
    {{- with .matchConditions }}
    matchConditions:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end -}}

{{/* Whether entourage's Pods call the API (and so mount a token and may reach the apiserver): to patch their
caBundle, to list LimitRanges, or for the watchdog. */}}
{{- define "entourage.callsApi" -}}
{{- if or (include "entourage.patchCABundle" .) .Values.watchdog.enabled .Values.webhook.limitRanges -}}true{{- end -}}
{{- end -}}
