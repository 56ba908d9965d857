//! Deterministic synthetic energy-sector credit data. The same seed gives the same data on
//! every machine and every version, which is why the generator is a fixed SplitMix64 and not a
//! library RNG whose stream may change between releases.

use serde_json::{Value, json};

use crate::domain::{ResidentId, Uscc};

pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Provinces: (province code, name, a district code for ID numbers).
pub const REGIONS: &[(&str, &str, &str)] = &[
    ("110000", "北京市", "110105"),
    ("310000", "上海市", "310104"),
    ("140000", "山西省", "140105"),
    ("150000", "内蒙古自治区", "150102"),
    ("320000", "江苏省", "320102"),
    ("370000", "山东省", "370102"),
    ("440000", "广东省", "440305"),
    ("510000", "四川省", "510104"),
    ("610000", "陕西省", "610102"),
    ("650000", "新疆维吾尔自治区", "650102"),
];

pub const SECTORS: &[(&str, &str)] = &[
    ("power", "电力"),
    ("coal", "煤业"),
    ("oil_gas", "油气"),
    ("nuclear", "核能"),
    ("new_energy", "新能源"),
];

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "高", "林", "罗", "欧阳", "司马",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "强", "磊", "军", "洋", "勇", "艳", "杰", "涛", "明", "超",
    "秀英", "华", "建国", "志强", "丽", "海燕", "文博",
];
const WORDS: &[&str] = &[
    "恒泰", "华信", "宏远", "中联", "新源", "汇能", "金桥", "东方", "鑫达", "天成", "瑞丰", "长风",
];
const SUFFIXES: &[&str] = &["有限公司", "股份有限公司", "集团有限公司"];
const CUSTOMERS: &[&str] = &[
    "省电网公司",
    "钢铁集团",
    "化工园区",
    "城市燃气公司",
    "铝业公司",
    "水泥集团",
    "数据中心",
];
const GOODS: &[(&str, &str)] = &[
    ("电煤", "元/吨"),
    ("上网电价", "元/千瓦时"),
    ("天然气", "元/立方米"),
    ("光伏组件", "元/瓦"),
    ("铀燃料组件", "万元/组"),
];
const PENALTY_REASONS: &[&str] = &[
    "未按规定报送电力监管信息",
    "安全生产责任落实不到位",
    "违规调度",
    "未按许可条件从事经营",
    "环保设施运行不正常",
];
const RATING_GRADES: &[&str] = &["AAA", "AA", "A", "BBB", "BB", "B", "CCC"];
const CLASS_GRADES: &[&str] = &["A", "B", "C", "D"];
/// Severities of the national credit-repair rules: 轻微, 一般, 严重.
const SEVERITIES: &[&str] = &["minor", "general", "serious"];
/// The second stream's seed offset: the fields added for the law's time limits draw from their
/// own generator, so the data every earlier field had stays as it was.
const LAW_STREAM: u64 = 0x6C61_775F_7469_6D65;

pub struct Dataset {
    pub entities: Vec<Value>,
    pub persons: Vec<Value>,
}

fn date(rng: &mut SplitMix64, from_year: i32, to_year: i32) -> String {
    let y = from_year + rng.below((to_year - from_year + 1) as u64) as i32;
    let m = 1 + rng.below(12);
    let d = 1 + rng.below(28);
    format!("{y:04}-{m:02}-{d:02}")
}

fn add_years(d: &str, years: i32) -> String {
    let y: i32 = d[..4].parse().expect("generated dates are well formed");
    format!("{:04}{}", y + years, &d[4..])
}

/// `d` moved by `months` (generated days are 1 to 28, so every month has them).
pub fn shift_months(d: &str, months: i32) -> String {
    let y: i32 = d[..4].parse().expect("generated dates are well formed");
    let m: i32 = d[5..7].parse().expect("generated dates are well formed");
    let total = y * 12 + (m - 1) + months;
    format!(
        "{:04}-{:02}{}",
        total.div_euclid(12),
        total.rem_euclid(12) + 1,
        &d[7..]
    )
}

/// The day the act ended: one to 24 months before it was decided or recorded.
fn ended_before(law: &mut SplitMix64, d: &str) -> String {
    shift_months(d, -(1 + law.below(24) as i32))
}

/// Repair, revocation and the act's end for a penalty: a repair only after the shortest
/// display period of its severity (3 months general, 1 year serious).
fn penalty_marks(law: &mut SplitMix64, p: &mut Value, today: &str) {
    let decided = p["decided_at"].as_str().unwrap_or("2020-01-01").to_string();
    p["ended_at"] = json!(ended_before(law, &decided));
    let min_months = match p["severity"].as_str() {
        Some("general") => 3,
        Some("serious") => 12,
        _ => return,
    };
    // Marks lie in the past: a store records what happened, not what will.
    if law.chance(30) {
        let d = shift_months(&decided, min_months + law.below(6) as i32);
        if d.as_str() <= today {
            p["repaired_at"] = json!(d);
        }
    } else if law.chance(8) {
        let d = shift_months(&decided, 1 + law.below(6) as i32);
        if d.as_str() <= today {
            p["revoked_at"] = json!(d);
        }
    }
}

/// List entries with their exits: a black-list entry for a serious penalty, red-list entries
/// for some; three years' validity; some removed early, with the reason.
fn list_entries(
    law: &mut SplitMix64,
    penalties: &[Value],
    (black, red): (bool, bool),
    today: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    let serious = penalties
        .iter()
        .find(|p| p["severity"] == "serious")
        .and_then(|p| p["decided_at"].as_str());
    if let (true, Some(listed)) = (black || law.chance(40), serious) {
        let removed = law
            .chance(30)
            .then(|| shift_months(listed, 12 + law.below(12) as i32))
            .filter(|d| d.as_str() <= today);
        out.push(json!({
            "list": "black", "reason": "严重失信：受到严重行政处罚", "listed_at": listed,
            "valid_until": shift_months(listed, 36),
            "removed_at": removed, "exit_reason": removed.as_ref().map(|_| "信用修复"),
        }));
    }
    if red || law.chance(10) {
        let listed = date(law, 2019, 2026);
        let removed = law
            .chance(20)
            .then(|| shift_months(&listed, 6 + law.below(12) as i32))
            .filter(|d| d.as_str() <= today);
        out.push(json!({
            "list": "red", "reason": "守信激励：信用评价优秀", "listed_at": listed,
            "valid_until": shift_months(&listed, 36),
            "removed_at": removed, "exit_reason": removed.as_ref().map(|_| "出现失信行为"),
        }));
    }
    out
}

/// Today, `YYYY-MM-DD` (UTC), for deriving flags from current entries.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil-from-days (H. Hinnant), to avoid a date dependency for one conversion.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Whether an entry is current on `today`: not removed, still valid.
pub fn entry_current(e: &Value, today: &str) -> bool {
    e["removed_at"].is_null() && e["valid_until"].as_str().is_some_and(|v| v >= today)
}

/// An entity's flags from its current entries only.
pub fn derive_flags(entity: &mut Value, today: &str) {
    for (flag, list) in [("black_list", "black"), ("red_list", "red")] {
        let on = entity["list_entries"].as_array().is_some_and(|es| {
            es.iter()
                .any(|e| e["list"] == list && entry_current(e, today))
        });
        entity[flag] = json!(on);
    }
}

fn person_name(rng: &mut SplitMix64) -> String {
    format!("{}{}", rng.pick(SURNAMES), rng.pick(GIVEN))
}

fn phone(rng: &mut SplitMix64) -> String {
    let prefixes = [
        "130", "135", "138", "139", "150", "158", "186", "189", "177",
    ];
    format!("{}{:08}", rng.pick(&prefixes), rng.below(100_000_000))
}

fn resident_id(rng: &mut SplitMix64, district: &str) -> ResidentId {
    let birth = date(rng, 1960, 1998).replace('-', "");
    let seq = rng.below(1000);
    ResidentId::complete(&format!("{district}{birth}{seq:03}"))
        .expect("generated digits complete to a valid id")
}

fn uscc(rng: &mut SplitMix64, region: &str, index: usize) -> Uscc {
    // 9 = market regulator, 1 = enterprise; the org code's first digits make codes unique.
    let org = format!("{:04}{:04}", index % 10_000, rng.below(10_000));
    Uscc::complete(&format!("91{region}{org}")).expect("generated digits complete to a valid code")
}

/// Long on purpose: the fields draw from one generator in one fixed order, and that order is
/// the data every test and benchmark relies on; split it and a reordering changes every entity.
/// What the law's time limits added draws from its own stream (`LAW_STREAM`) in helpers.
pub fn generate(seed: u64, count: usize) -> Dataset {
    let mut rng = SplitMix64::new(seed);
    let mut law = SplitMix64::new(seed ^ LAW_STREAM);
    let today = today();
    let mut entities = Vec::with_capacity(count);
    let mut persons = Vec::with_capacity(count * 2);
    for i in 0..count {
        let (region, region_name, district) = *rng.pick(REGIONS);
        let (sector, sector_word) = *rng.pick(SECTORS);
        let code = uscc(&mut rng, region, i);
        let short_region = region_name
            .trim_end_matches("维吾尔自治区")
            .trim_end_matches("自治区")
            .trim_end_matches('省')
            .trim_end_matches('市');
        let name = format!(
            "{short_region}{}{sector_word}{}",
            rng.pick(WORDS),
            rng.pick(SUFFIXES)
        );
        let rep_id = resident_id(&mut rng, district);
        let rep_name = person_name(&mut rng);
        let rep_phone = phone(&mut rng);
        let capital = (1 + rng.below(500)) * 1_000_000;
        let established = date(&mut rng, 1995, 2020);
        let mut penalties: Vec<Value> = (0..rng.below(3))
            .map(|k| {
                let decided = date(&mut rng, 2016, 2026);
                let severity = *rng.pick(SEVERITIES);
                let years = match severity {
                    "minor" => 0,
                    "ordinary" => 1,
                    _ => 3,
                };
                let ends = if years == 0 {
                    // Minor penalties are published for three months.
                    let m: u32 = decided[5..7].parse().expect("month");
                    let (y, m) = if m > 9 { (1, m - 9) } else { (0, m + 3) };
                    format!("{:04}-{m:02}{}", decided[..4].parse::<i32>().expect("year") + y, &decided[7..])
                } else {
                    add_years(&decided, years)
                };
                json!({
                    "decision_number": format!("{}能监罚〔{}〕{}号", short_region, &decided[..4], 10 + k + rng.below(80)),
                    "authority": format!("国家能源局{short_region}监管办公室"),
                    "reason": rng.pick(PENALTY_REASONS),
                    "severity": severity,
                    "amount": (1 + rng.below(50)) * 10_000,
                    "decided_at": decided,
                    "publication_ends": ends,
                })
            })
            .collect();
        let black_list = penalties.iter().any(|p| p["severity"] == "serious") && rng.chance(50);
        let red_list = !black_list && rng.chance(15);
        penalties
            .iter_mut()
            .for_each(|p| penalty_marks(&mut law, p, &today));
        let entries = list_entries(&mut law, &penalties, (black_list, red_list), &today);
        let licensed = date(&mut rng, 2010, 2024);
        let mut entity = json!({
            "uscc": code.as_str(),
            "name": name,
            "sector": sector,
            "region": region,
            "region_name": region_name,
            "established": established,
            "registered_capital": capital,
            "legal_representative": {
                "name": rep_name,
                "id_number": rep_id.as_str(),
                "phone": rep_phone,
            },
            "address": format!("{region_name}{}路{}号", rng.pick(WORDS), 1 + rng.below(300)),
            "annual_revenue": capital * (1 + rng.below(20)),
            "major_customers": (0..1 + rng.below(3)).map(|_| json!({
                "name": format!("{}{}", rng.pick(WORDS), rng.pick(CUSTOMERS)),
                "share": (5 + rng.below(40)) as f64 / 100.0,
            })).collect::<Vec<_>>(),
            "contract_prices": (0..1 + rng.below(2)).map(|_| {
                let (item, unit) = *rng.pick(GOODS);
                json!({"item": item, "unit": unit, "price": (100 + rng.below(90_000)) as f64 / 100.0})
            }).collect::<Vec<_>>(),
            "rating": {
                "grade": rng.pick(RATING_GRADES),
                "agency": format!("{}信用评级有限公司", rng.pick(WORDS)),
                "rated_at": date(&mut rng, 2022, 2026),
            },
            "classification_grade": rng.pick(CLASS_GRADES),
            "licenses": [{
                "number": format!("1{}{:05}-{:05}", &region[..2], i, rng.below(100_000)),
                "type": "电力业务许可证",
                "issued_at": licensed,
                "valid_until": add_years(&licensed, 20),
            }],
            "penalties": penalties,
            "good_records": if rng.chance(40) { vec![json!({
                "title": "年度安全生产先进单位",
                "awarded_at": date(&mut rng, 2018, 2026),
            })] } else { vec![] },
            "commitments": [{
                "title": "信用承诺书",
                "signed_at": date(&mut rng, 2019, 2026),
            }],
            "list_entries": entries,
            "red_list": red_list,
            "black_list": black_list,
        });
        derive_flags(&mut entity, &today);
        persons.push(json!({
            "id_number": rep_id.as_str(),
            "name": entity["legal_representative"]["name"],
            "phone": entity["legal_representative"]["phone"],
            "employer_uscc": code.as_str(),
            "employer_name": entity["name"],
            "position": "法定代表人",
            "certificates": [],
            "records": [],
        }));
        let worker_id = resident_id(&mut rng, district);
        let cert_date = date(&mut rng, 2012, 2024);
        persons.push(json!({
            "id_number": worker_id.as_str(),
            "name": person_name(&mut rng),
            "phone": phone(&mut rng),
            "employer_uscc": code.as_str(),
            "employer_name": entity["name"],
            "position": "从业人员",
            "certificates": [{
                "type": rng.pick(&["电工进网作业许可证", "注册安全工程师", "特种作业操作证"]),
                "number": format!("C{:010}", rng.below(10_000_000_000)),
                "issued_at": cert_date,
                "valid_until": add_years(&cert_date, 6),
            }],
            "records": if rng.chance(30) {
                let d = date(&mut rng, 2017, 2026);
                vec![json!({"id": format!("R{i:05}-1"), "kind": "bad", "description": "违章作业被通报",
                    "date": d, "ended_at": ended_before(&mut law, &d)})]
            } else {
                let d = date(&mut rng, 2017, 2026);
                vec![json!({"id": format!("R{i:05}-1"), "kind": "good", "description": "岗位技术能手",
                    "date": d, "ended_at": d})]
            },
        }));
        entities.push(entity);
    }
    Dataset { entities, persons }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data_and_every_id_is_valid() {
        let a = generate(7, 50);
        let b = generate(7, 50);
        assert_eq!(a.entities, b.entities);
        assert_ne!(a.entities, generate(8, 50).entities);
        let mut seen = std::collections::HashSet::new();
        for e in &a.entities {
            let u = e["uscc"].as_str().unwrap();
            assert!(Uscc::parse(u).is_ok(), "{u}");
            assert!(seen.insert(u.to_string()), "duplicate {u}");
            let id = e["legal_representative"]["id_number"].as_str().unwrap();
            assert!(ResidentId::parse(id).is_ok(), "{id}");
            let phone = e["legal_representative"]["phone"].as_str().unwrap();
            assert_eq!(phone.len(), 11);
        }
        for p in &a.persons {
            assert!(ResidentId::parse(p["id_number"].as_str().unwrap()).is_ok());
        }
    }

    /// Flags say what the current entries say, never more: a removed or lapsed entry sets none.
    #[test]
    fn flags_derive_from_current_entries_only() {
        let data = generate(42, 200);
        let today = today();
        let (mut removed, mut lapsed) = (0, 0);
        for e in &data.entities {
            let entries = e["list_entries"].as_array().unwrap();
            for (flag, list) in [("black_list", "black"), ("red_list", "red")] {
                let current = entries
                    .iter()
                    .any(|x| x["list"] == list && entry_current(x, &today));
                assert_eq!(e[flag], current, "{e}");
            }
            for x in entries {
                removed += usize::from(!x["removed_at"].is_null());
                lapsed += usize::from(x["valid_until"].as_str().unwrap() < today.as_str());
                assert_eq!(x["removed_at"].is_null(), x["exit_reason"].is_null());
            }
            for p in e["penalties"].as_array().unwrap() {
                assert!(p["ended_at"].as_str().unwrap() < p["decided_at"].as_str().unwrap());
            }
        }
        assert!(removed > 0 && lapsed > 0, "the data must show both exits");
    }

    #[test]
    fn months_shift_across_years() {
        assert_eq!(shift_months("2024-11-05", 3), "2025-02-05");
        assert_eq!(shift_months("2024-01-05", -1), "2023-12-05");
        assert_eq!(today().len(), 10);
    }
}
