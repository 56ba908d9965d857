//! The two message catalogs, side by side in one file so that a key added to one is seen
//! missing from the other (and `tests::catalogs_have_the_same_keys` fails if it is).
//! English labels are a contract: outside tests find inputs and buttons by them (DESIGN.md).

use http::{HeaderMap, header};

/// The languages the pages speak. Anything else falls back to English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    ZhCn,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhCn => "zh-CN",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "en" => Some(Lang::En),
            "zh-CN" => Some(Lang::ZhCn),
            _ => None,
        }
    }

    /// The `lang` cookie set by the switch wins; then the first `Accept-Language` entry we
    /// speak, by the caller's quality order; then English.
    pub fn choose(headers: &HeaderMap) -> Self {
        if let Some(l) = super::cookie(headers, "lang").and_then(|v| Lang::parse(&v)) {
            return l;
        }
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(from_accept_language)
            .unwrap_or(Lang::En)
    }

    fn catalog(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::En => EN,
            Lang::ZhCn => ZH_CN,
        }
    }

    /// A missing key shows the key itself: visible in a screenshot, caught by the key test.
    pub fn t(self, key: &str) -> &'static str {
        self.catalog()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .unwrap_or("??")
    }
}

/// The highest-quality language tag we speak (`zh`, `zh-CN`, `zh-Hans` -> Chinese).
fn from_accept_language(value: &str) -> Option<Lang> {
    let mut best: Option<(f32, Lang)> = None;
    for part in value.split(',').take(16) {
        let mut it = part.trim().split(';');
        let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse().ok()))
            .unwrap_or(1.0f32);
        let lang = if tag == "zh" || tag.starts_with("zh-cn") || tag.starts_with("zh-hans") {
            Lang::ZhCn
        } else if tag == "en" || tag.starts_with("en-") {
            Lang::En
        } else {
            continue;
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, lang));
        }
    }
    best.map(|(_, l)| l)
}

pub const EN: &[(&str, &str)] = &[
    ("site.name", "credgate public credit information"),
    ("nav.main", "Main navigation"),
    ("nav.lookup", "Look up"),
    ("nav.red", "Red list"),
    ("nav.black", "Black list"),
    ("nav.report", "Report"),
    ("lang.switch", "中文"),
    ("lang.other", "zh-CN"),
    ("lookup.title", "Look up an entity"),
    (
        "lookup.intro",
        "Enter a unified social credit code (18 characters) to see the entity's public record.",
    ),
    ("lookup.uscc", "USCC"),
    ("lookup.button", "Look up"),
    (
        "lookup.invalid",
        "This is not a valid USCC: it has 18 characters (digits and capital letters) and a correct check character. Please check it and try again.",
    ),
    ("lookup.not_found", "No entity with this USCC is on record."),
    ("lookup.result", "Public record"),
    ("lookup.field", "Field"),
    ("lookup.value", "Value"),
    ("lookup.masked", "Fields withheld or masked for the public"),
    ("list.red.title", "Red list"),
    ("list.black.title", "Black list"),
    (
        "list.intro",
        "Current entries only; entries that have expired or were removed are not shown.",
    ),
    ("list.empty", "No entries on this page."),
    ("list.uscc", "USCC"),
    ("list.name", "Name"),
    ("list.sector", "Sector"),
    ("list.region", "Region"),
    ("list.reason", "Reason"),
    ("list.listed_at", "Listed on"),
    ("list.valid_until", "Valid until"),
    ("list.prev", "Previous page"),
    ("list.next", "Next page"),
    ("list.page", "Page"),
    ("list.pages", "Pages"),
    ("list.chart", "Entries on this page by sector"),
    ("report.title", "Report a concern"),
    (
        "report.intro",
        "Report fraud, false records or misuse of credit data. You do not need to give your name. Keep the receipt: it is shown only once.",
    ),
    ("report.about", "About"),
    ("report.category", "Category"),
    ("report.description", "Description"),
    ("report.contact", "Contact (optional)"),
    ("report.submit", "Submit"),
    ("report.cat.fraud", "Fraud"),
    ("report.cat.false_records", "False records"),
    ("report.cat.data_abuse", "Misuse of data"),
    ("report.cat.safety", "Safety"),
    ("report.cat.other", "Other"),
    ("report.filed", "Your report was received"),
    (
        "report.receipt_intro",
        "This is your receipt. Write it down or copy it now: it will not be shown again, and nobody can recover it for you.",
    ),
    ("report.receipt", "Receipt"),
    ("report.check_title", "Check a report's status"),
    ("report.check", "Check"),
    ("report.status", "Status"),
    ("report.unknown_receipt", "No report has this receipt."),
    ("report.status.received", "Received"),
    ("report.status.investigating", "Under investigation"),
    ("report.status.closed", "Closed"),
    (
        "report.invalid",
        "The report could not be accepted. Please fill in About and Description and choose a category.",
    ),
    ("error.title", "Something went wrong"),
    (
        "error.400",
        "The request could not be understood. Please check what you entered.",
    ),
    (
        "error.403",
        "This request was refused. If you submitted a form, reload the page and try again.",
    ),
    ("error.404", "This page does not exist."),
    ("error.405", "This action is not available here."),
    ("error.413", "What you sent is too large."),
    (
        "error.429",
        "Too many requests. Please wait a moment and try again.",
    ),
    (
        "error.503",
        "The service is unavailable right now. Nothing was recorded or released. Please try again later.",
    ),
    (
        "error.other",
        "The request could not be completed. Please try again later.",
    ),
    ("error.request_id", "Request id"),
    ("error.home", "Back to the start page"),
    (
        "footer.privacy",
        "Every look-up is recorded in the gateway's audit log. Reports are never linked to who filed them.",
    ),
];

pub const ZH_CN: &[(&str, &str)] = &[
    ("site.name", "credgate 公共信用信息"),
    ("nav.main", "主导航"),
    ("nav.lookup", "查询"),
    ("nav.red", "红名单"),
    ("nav.black", "黑名单"),
    ("nav.report", "举报"),
    ("lang.switch", "English"),
    ("lang.other", "en"),
    ("lookup.title", "查询市场主体"),
    (
        "lookup.intro",
        "输入统一社会信用代码（18 位）查看该主体的公开信息。",
    ),
    ("lookup.uscc", "统一社会信用代码"),
    ("lookup.button", "查询"),
    (
        "lookup.invalid",
        "这不是有效的统一社会信用代码：应为 18 位数字或大写字母，且校验码正确。请核对后重试。",
    ),
    ("lookup.not_found", "没有该统一社会信用代码的主体记录。"),
    ("lookup.result", "公开信息"),
    ("lookup.field", "字段"),
    ("lookup.value", "内容"),
    ("lookup.masked", "对公众隐去或遮蔽的字段数"),
    ("list.red.title", "红名单"),
    ("list.black.title", "黑名单"),
    (
        "list.intro",
        "仅显示现行条目；已到期或已移出的条目不予显示。",
    ),
    ("list.empty", "本页没有条目。"),
    ("list.uscc", "统一社会信用代码"),
    ("list.name", "名称"),
    ("list.sector", "行业"),
    ("list.region", "地区"),
    ("list.reason", "列入事由"),
    ("list.listed_at", "列入日期"),
    ("list.valid_until", "有效期至"),
    ("list.prev", "上一页"),
    ("list.next", "下一页"),
    ("list.page", "第几页"),
    ("list.pages", "分页"),
    ("list.chart", "本页条目按行业统计"),
    ("report.title", "举报"),
    (
        "report.intro",
        "举报欺诈、虚假记录或滥用信用数据的行为。无需留下姓名。请保存回执：回执只显示一次。",
    ),
    ("report.about", "举报对象"),
    ("report.category", "类别"),
    ("report.description", "情况说明"),
    ("report.contact", "联系方式（选填）"),
    ("report.submit", "提交"),
    ("report.cat.fraud", "欺诈"),
    ("report.cat.false_records", "虚假记录"),
    ("report.cat.data_abuse", "滥用数据"),
    ("report.cat.safety", "安全"),
    ("report.cat.other", "其他"),
    ("report.filed", "您的举报已收到"),
    (
        "report.receipt_intro",
        "这是您的回执。请立即记下或复制：它不会再次显示，任何人都无法为您找回。",
    ),
    ("report.receipt", "回执"),
    ("report.check_title", "查询举报处理状态"),
    ("report.check", "查询状态"),
    ("report.status", "状态"),
    ("report.unknown_receipt", "没有与该回执对应的举报。"),
    ("report.status.received", "已收到"),
    ("report.status.investigating", "调查中"),
    ("report.status.closed", "已办结"),
    (
        "report.invalid",
        "无法受理该举报。请填写举报对象和情况说明，并选择类别。",
    ),
    ("error.title", "出错了"),
    ("error.400", "无法理解该请求。请检查您输入的内容。"),
    (
        "error.403",
        "该请求被拒绝。如果您提交了表单，请刷新页面后重试。",
    ),
    ("error.404", "该页面不存在。"),
    ("error.405", "此处不提供该操作。"),
    ("error.413", "您发送的内容过大。"),
    ("error.429", "请求过于频繁。请稍候再试。"),
    (
        "error.503",
        "服务暂时不可用。未记录也未发布任何内容。请稍后再试。",
    ),
    ("error.other", "请求未能完成。请稍后再试。"),
    ("error.request_id", "请求编号"),
    ("error.home", "返回首页"),
    (
        "footer.privacy",
        "每次查询都记入网关的审计日志。举报内容从不与举报人关联。",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogs_have_the_same_keys() {
        fn keys(c: &'static [(&'static str, &'static str)]) -> Vec<&'static str> {
            let mut k: Vec<&str> = c.iter().map(|(k, _)| *k).collect();
            k.sort_unstable();
            k
        }
        let (en, zh) = (keys(EN), keys(ZH_CN));
        assert_eq!(en, zh, "the two catalogs must carry the same keys");
        let mut dedup = en.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), en.len(), "a key appears twice");
        assert!(ZH_CN.iter().all(|(_, v)| !v.is_empty()));
    }

    #[test]
    fn accept_language_picks_by_quality() {
        assert_eq!(
            from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"),
            Some(Lang::ZhCn)
        );
        assert_eq!(from_accept_language("en-GB,zh;q=0.5"), Some(Lang::En));
        assert_eq!(from_accept_language("fr, zh;q=0.3"), Some(Lang::ZhCn));
        assert_eq!(from_accept_language("fr"), None);
        assert_eq!(from_accept_language("zh;q=0, en;q=0.1"), Some(Lang::En));
    }
}
